//! The PostgreSQL store's groups: the documented `groups` and `group_members` tables.
//! A group step's operations are applied in one transaction with the step's run key,
//! like a run's learners.

use tokio_postgres::GenericClient;

use super::{at, record_run, PostgresStore};
use crate::db;
use crate::groups::{Group, GroupOp, Groups};
use crate::store::StoreError;

impl PostgresStore {
    /// The groups of a directory with their members.
    pub async fn groups(&self, directory: &str) -> Result<Groups, StoreError> {
        if !self.migrated {
            return Ok(Groups::new());
        }
        read(&self.client, directory).await.map_err(|e| self.err(e))
    }

    /// Apply a group step's operations and record its key, in one transaction.
    pub async fn apply_groups(
        &mut self,
        directory: &str,
        run_key: &str,
        ops: &[GroupOp],
    ) -> Result<(), StoreError> {
        if !self.migrated {
            return Err(StoreError::Other("store opened read-only".to_string()));
        }
        let url = self.url.clone();
        let e = at(&url);
        let now = db::now();
        let tx = self.client.transaction().await.map_err(e)?;
        super::lease::fence(self.held.as_ref(), &tx, &url).await?;
        write(&tx, directory, ops, &now).await.map_err(e)?;
        record_run(&tx, directory, run_key, &now).await.map_err(e)?;
        tx.commit().await.map_err(e)
    }
}

async fn read(
    client: &impl GenericClient,
    directory: &str,
) -> Result<Groups, tokio_postgres::Error> {
    let mut groups = Groups::new();
    for r in client
        .query(
            "SELECT external_id, display_name, email FROM groups WHERE directory = $1",
            &[&directory],
        )
        .await?
    {
        let g = Group {
            external_id: r.get(0),
            display_name: r.get(1),
            email: r.get(2),
            members: Default::default(),
        };
        groups.insert(g.external_id.clone(), g);
    }
    for r in client
        .query(
            "SELECT group_external_id, learner_external_id FROM group_members WHERE directory = $1",
            &[&directory],
        )
        .await?
    {
        let group: &str = r.get(0);
        if let Some(g) = groups.get_mut(group) {
            g.members.insert(r.get(1));
        }
    }
    Ok(groups)
}

async fn add_members(
    tx: &impl GenericClient,
    directory: &str,
    group: &str,
    members: &[&str],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO group_members (directory, group_external_id, learner_external_id)
         SELECT $1, $2, m FROM unnest($3::text[]) AS m ON CONFLICT DO NOTHING",
        &[&directory, &group, &members],
    )
    .await?;
    Ok(())
}

async fn touch(
    tx: &impl GenericClient,
    directory: &str,
    group: &str,
    now: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE groups SET updated_at = $3 WHERE directory = $1 AND external_id = $2",
        &[&directory, &group, &now],
    )
    .await?;
    Ok(())
}

async fn write(
    tx: &impl GenericClient,
    directory: &str,
    ops: &[GroupOp],
    now: &str,
) -> Result<(), tokio_postgres::Error> {
    for op in ops {
        match op {
            GroupOp::Create { group } => {
                tx.execute(
                    "INSERT INTO groups (directory, external_id, display_name, email, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (directory, external_id) DO UPDATE SET display_name = excluded.display_name,
                        email = excluded.email, updated_at = excluded.updated_at",
                    &[&directory, &group.external_id, &group.display_name, &group.email, &now],
                )
                .await?;
                let members: Vec<&str> = group.members.iter().map(String::as_str).collect();
                add_members(tx, directory, &group.external_id, &members).await?;
            }
            GroupOp::Rename {
                external_id,
                display_name,
                email,
                ..
            } => {
                tx.execute(
                    "UPDATE groups SET display_name = $3, email = $4, updated_at = $5
                     WHERE directory = $1 AND external_id = $2",
                    &[&directory, external_id, display_name, email, &now],
                )
                .await?;
            }
            GroupOp::AddMembers {
                external_id,
                members,
                ..
            } => {
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                add_members(tx, directory, external_id, &members).await?;
                touch(tx, directory, external_id, now).await?;
            }
            GroupOp::RemoveMembers {
                external_id,
                members,
                ..
            } => {
                tx.execute(
                    "DELETE FROM group_members WHERE directory = $1 AND group_external_id = $2
                     AND learner_external_id = ANY($3)",
                    &[&directory, external_id, members],
                )
                .await?;
                touch(tx, directory, external_id, now).await?;
            }
            GroupOp::Remove { external_id, .. } => {
                tx.execute(
                    "DELETE FROM group_members WHERE directory = $1 AND group_external_id = $2",
                    &[&directory, external_id],
                )
                .await?;
                tx.execute(
                    "DELETE FROM groups WHERE directory = $1 AND external_id = $2",
                    &[&directory, external_id],
                )
                .await?;
            }
        }
    }
    Ok(())
}
