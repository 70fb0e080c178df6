// A second, independent SCIM 2.0 service provider for the interop tests
// (tests/it/scim_interop2.rs): SCIMMY's protocol implementation (npm `scimmy` and
// `scimmy-routers`) over in-memory user and group tables (groups: tests/it/groups.rs). Listens on 127.0.0.1 only.
// Usage: node scripts/scim-gateway.mjs PORT TOKEN  (prints "listening PORT" when up)
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import { randomUUID } from "node:crypto";

const [port, token] = process.argv.slice(2);
if (!port || !token) {
  console.error("usage: scim-gateway.mjs PORT TOKEN");
  process.exit(2);
}

const users = new Map();

SCIMMY.Resources.declare(SCIMMY.Resources.User.extend(SCIMMY.Schemas.EnterpriseUser, false))
  .ingress((resource, data) => {
    const taken = [...users.values()].find(
      (u) => u.id !== resource.id && u.userName.toLowerCase() === String(data.userName).toLowerCase(),
    );
    if (taken) {
      throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${data.userName} is taken`);
    }
    const now = new Date().toISOString();
    if (resource.id) {
      const existing = users.get(resource.id);
      if (!existing) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
      const user = { ...data, id: resource.id, meta: { created: existing.meta.created, lastModified: now } };
      users.set(resource.id, user);
      return user;
    }
    const id = randomUUID();
    const user = { ...data, id, meta: { created: now, lastModified: now } };
    users.set(id, user);
    return user;
  })
  .egress((resource) => {
    if (resource.id) {
      const user = users.get(resource.id);
      if (!user) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
      return user;
    }
    return [...users.values()];
  })
  .degress((resource) => {
    if (!users.delete(resource.id)) {
      throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
    }
  });

// Groups, for the group tests (tests/it/groups.rs): SCIMMY applies PATCHes of
// `members` itself and hands the result to ingress.
const groups = new Map();

SCIMMY.Resources.declare(SCIMMY.Resources.Group)
  .ingress((resource, data) => {
    const now = new Date().toISOString();
    if (resource.id) {
      const existing = groups.get(resource.id);
      if (!existing) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
      const group = { ...data, id: resource.id, meta: { created: existing.meta.created, lastModified: now } };
      groups.set(resource.id, group);
      return group;
    }
    const id = randomUUID();
    const group = { ...data, id, meta: { created: now, lastModified: now } };
    groups.set(id, group);
    return group;
  })
  .egress((resource) => {
    if (resource.id) {
      const group = groups.get(resource.id);
      if (!group) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
      return group;
    }
    return [...groups.values()];
  })
  .degress((resource) => {
    if (!groups.delete(resource.id)) {
      throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
    }
  });

SCIMMY.Config.set({ patch: true, filter: { supported: true, maxResults: 1000 } });

const app = express();
app.use(
  "/scim/v2",
  new SCIMMYRouters({
    type: "bearer",
    handler: (request) => {
      if (request.header("Authorization") !== `Bearer ${token}`) {
        throw new Error("Authorization failure");
      }
      return "learner-sync";
    },
  }),
);
const server = app.listen(Number(port), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
