// The real @auth/pg-adapter for tests/stores/sql/test_pg_adapter_sessions.py.
//
// argv[2] is a PostgreSQL connection string; stdin a JSON array of requests, stdout a JSON
// array of results ({ok: true, value} or {ok: false, error}). Each request is {op, ...}:
//
//   schema                                   the adapter's tables, as its docs give them
//   createUser    {email, name}              adapter.createUser -> the user (its id)
//   createSession {sessionToken, userId, expires}   adapter.createSession
//   updateSession {sessionToken, expires}    adapter.updateSession
//   deleteSession {sessionToken}             adapter.deleteSession
import PostgresAdapter from "@auth/pg-adapter"
import pg from "pg"

const SCHEMA = `
CREATE TABLE verification_token (identifier TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL,
  token TEXT NOT NULL, PRIMARY KEY (identifier, token));
CREATE TABLE accounts (id SERIAL, "userId" INTEGER NOT NULL, type VARCHAR(255) NOT NULL,
  provider VARCHAR(255) NOT NULL, "providerAccountId" VARCHAR(255) NOT NULL,
  refresh_token TEXT, access_token TEXT, expires_at BIGINT, id_token TEXT, scope TEXT,
  session_state TEXT, token_type TEXT, PRIMARY KEY (id));
CREATE TABLE sessions (id SERIAL, "userId" INTEGER NOT NULL, expires TIMESTAMPTZ NOT NULL,
  "sessionToken" VARCHAR(255) NOT NULL, PRIMARY KEY (id));
CREATE TABLE users (id SERIAL, name VARCHAR(255), email VARCHAR(255),
  "emailVerified" TIMESTAMPTZ, image TEXT, PRIMARY KEY (id));
`

const pool = new pg.Pool({ connectionString: process.argv[2], max: 2 })
const adapter = PostgresAdapter(pool)

async function run(req) {
  switch (req.op) {
    case "schema":
      await pool.query(SCHEMA)
      return null
    case "createUser":
      return await adapter.createUser({ email: req.email, name: req.name, emailVerified: null })
    case "createSession":
      return await adapter.createSession({
        sessionToken: req.sessionToken,
        userId: req.userId,
        expires: new Date(req.expires * 1000),
      })
    case "updateSession":
      return await adapter.updateSession({
        sessionToken: req.sessionToken,
        expires: new Date(req.expires * 1000),
      })
    case "deleteSession":
      return await adapter.deleteSession(req.sessionToken)
    default:
      throw new Error(`unknown op ${req.op}`)
  }
}

let input = ""
for await (const chunk of process.stdin) input += chunk
const results = []
for (const req of JSON.parse(input)) {
  try {
    results.push({ ok: true, value: (await run(req)) ?? null })
  } catch (err) {
    results.push({ ok: false, error: String(err) })
  }
}
await pool.end()
process.stdout.write(JSON.stringify(results))
