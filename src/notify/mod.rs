//! Notifications (`[[notify]]`): after a run, the events it makes (a failure streak,
//! holds, a recovery) go to webhooks, Slack, Teams or email in the background. A
//! bounded number wait or are in flight; delivery never blocks or fails a run.

pub mod deliver;
pub mod event;
pub mod message;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::config::{Config, NotifyTarget};
use crate::state::State;
use deliver::Resolved;
pub use event::{Event, RunEnd};

/// Notifications waiting or being sent at most; more are dropped with a warning.
const MAX_QUEUED: usize = 64;
/// Deliveries at once: a receiver that hangs holds one slot, not the queue.
const CONCURRENT: usize = 4;
/// The longest one HTTP request or SMTP exchange of a notification may take.
const MAX_REQUEST: Duration = Duration::from_secs(30);
/// How long the one-shot `sync` waits for undelivered notifications at exit.
pub const FLUSH: Duration = Duration::from_secs(10);

struct Queue {
    in_flight: AtomicUsize,
    idle: Notify,
    slots: Semaphore,
}

fn queue() -> &'static Arc<Queue> {
    static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        Arc::new(Queue {
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            slots: Semaphore::new(CONCURRENT),
        })
    })
}

/// The `approve` command for a directory, with `--config` unless it is the default.
fn approve_command(config: &Config, directory: &str) -> String {
    if config.path == std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH) {
        format!("learner-sync approve {directory}")
    } else {
        format!(
            "learner-sync --config {} approve {directory}",
            config.path.display()
        )
    }
}

/// The directory's sync outcomes, newest first (as many as a streak can need).
fn outcomes(config: &Config, directory: &str, limit: usize) -> Vec<String> {
    let Ok(Some(st)) = State::open_read_only(&config.sync.state_db) else {
        return vec![];
    };
    match st.recent_runs(directory, limit) {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.kind == "sync")
            .map(|r| r.outcome)
            .collect(),
        Err(e) => {
            tracing::warn!(directory, error = %e, "notifications: cannot read the runs");
            vec![]
        }
    }
}

/// Queue the notifications a finished (recorded) run makes. Call from within a tokio
/// runtime; returns at once.
pub fn after_run(config: &Config, end: &RunEnd) {
    if config.notify.is_empty() {
        return;
    }
    let most = config
        .notify
        .iter()
        .map(|n| n.after_failures as usize)
        .max()
        .unwrap_or(3);
    let outcomes = outcomes(config, &end.directory, most + 1_000);
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let approve = approve_command(config, &end.directory);
    let timeout = config.sync.request_timeout.min(MAX_REQUEST);
    for (index, n) in config.notify.iter().enumerate() {
        let events: Vec<Event> = event::decide(end, &outcomes, n.after_failures, &approve, &time)
            .into_iter()
            .filter(|(kind, _)| n.wants(*kind, &end.directory))
            .map(|(_, e)| e)
            .collect();
        if events.is_empty() {
            continue;
        }
        let name = format!("notify[{index}]");
        let target = match resolve(&n.target) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::warn!(target_name = %name, error = %e, "notification not sent");
                continue;
            }
        };
        for e in events {
            enqueue(name.clone(), target.clone(), e, timeout);
        }
    }
}

fn resolve(target: &NotifyTarget) -> Result<Resolved, String> {
    match target {
        NotifyTarget::Webhook { url, format } => {
            let url = url.resolve().map_err(|e| format!("url: {e}"))?;
            deliver::checked_url(&url).map_err(|e| format!("url: {e}"))?;
            Ok(Resolved::Webhook {
                url,
                format: *format,
            })
        }
        NotifyTarget::Email(m) => Ok(Resolved::Email {
            config: m.clone(),
            password: match &m.password {
                Some(p) => Some(p.resolve().map_err(|e| format!("password: {e}"))?),
                None => None,
            },
        }),
    }
}

fn enqueue(name: String, target: Arc<Resolved>, e: Event, timeout: Duration) {
    let q = queue().clone();
    if q.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED {
        q.in_flight.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(target_name = %name, event = e.event, directory = %e.directory, "notification dropped: too many waiting");
        return;
    }
    tokio::spawn(async move {
        let sent = match q.slots.acquire().await {
            Ok(_slot) => deliver::deliver(&target, &e, timeout).await,
            Err(_) => Err("the queue is closed".to_string()),
        };
        match sent {
            Ok(()) => {
                tracing::info!(target_name = %name, event = e.event, directory = %e.directory, "notification sent")
            }
            Err(error) => {
                tracing::warn!(target_name = %name, event = e.event, directory = %e.directory, error = %error, "notification not delivered")
            }
        }
        q.in_flight.fetch_sub(1, Ordering::SeqCst);
        q.idle.notify_waiters();
    });
}

/// Wait until every queued notification is sent or failed, at most `limit`; says how
/// many were given up (the one-shot `sync` calls this before it exits).
pub async fn flush(limit: Duration) -> usize {
    let q = queue().clone();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let idle = q.idle.notified();
        let left = q.in_flight.load(Ordering::SeqCst);
        if left == 0 {
            return 0;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            let left = q.in_flight.load(Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(
                    undelivered = left,
                    seconds = limit.as_secs_f64(),
                    "notifications not delivered before exit; giving up"
                );
            }
            return left;
        }
    }
}

/// `check`'s line per target: its secrets readable and its URL usable. Nothing is
/// sent: a check should not page anyone.
pub fn check(config: &Config) -> Vec<(String, crate::check::CheckLine)> {
    use crate::check::CheckLine;
    config
        .notify
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (kind, hint) = match &n.target {
                NotifyTarget::Webhook { format, .. } => (
                    match format {
                        crate::config::WebhookFormat::Json => "webhook",
                        crate::config::WebhookFormat::Slack => "slack",
                        crate::config::WebhookFormat::Teams => "teams",
                    },
                    "fix the notification's url secret",
                ),
                NotifyTarget::Email(_) => ("email", "fix the notification's password secret"),
            };
            let line = match resolve(&n.target) {
                Ok(_) => CheckLine::ok(format!(
                    "{} events, after {} failures",
                    n.events
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    n.after_failures
                )),
                Err(e) => CheckLine::failed(e, hint),
            };
            (format!("notify[{i}] ({kind})"), line)
        })
        .collect()
}

/// How long `sync` waits at exit: [`FLUSH`], or less in test builds
/// (`LEARNER_SYNC_TEST_NOTIFY_FLUSH_MS`), so a test of a hanging receiver is quick.
pub fn flush_limit() -> Duration {
    #[cfg(feature = "faults")]
    if let Some(ms) = std::env::var("LEARNER_SYNC_TEST_NOTIFY_FLUSH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms).min(FLUSH);
    }
    FLUSH
}
