// The real peer for tests/credentials/test_authjs_interop.py.
//
// Reads a JSON array of requests on stdin, writes a JSON array of results on stdout (one
// process serves a whole test module). Each request is {op, ...}; each result is
// {ok: true, value} or {ok: false, error}.
//
//   encode  {token, secret, salt, maxAge?}        @auth/core/jwt encode (what Auth.js sets)
//   decode  {token, secret, salt}                 @auth/core/jwt decode (what Auth.js reads)
//   chunk   {name, value}                         @auth/core SessionStore.chunk -> [{name, value}]
//   encrypt {payload, key_info, salt, enc, kid?, maxAge?, secret}
//           jose EncryptJWT with an HKDF key, for tokens @auth/core's encode never writes
//           (A256GCM, no kid, NextAuth v4's empty salt).
import { decode, encode } from "@auth/core/jwt"
import { hkdf } from "@panva/hkdf"
import { EncryptJWT, base64url, calculateJwkThumbprint } from "jose"
import { createRequire } from "node:module"
import { pathToFileURL } from "node:url"

// SessionStore is not exported by the package; load the shipped module by path.
const require = createRequire(import.meta.url)
const coreDir = require.resolve("@auth/core/jwt").replace(/jwt\.js$/, "")
const { SessionStore } = await import(pathToFileURL(coreDir + "lib/utils/cookie.js").href)

const silent = { debug() {}, error() {}, warn() {} }

async function run(req) {
  switch (req.op) {
    case "encode":
      return await encode({
        token: req.token,
        secret: req.secret,
        salt: req.salt,
        maxAge: req.maxAge,
      })
    case "decode":
      return await decode({ token: req.token, secret: req.secret, salt: req.salt })
    case "chunk": {
      const store = new SessionStore({ name: req.name, options: {} }, {}, silent)
      return store.chunk(req.value, {}).map((c) => ({ name: c.name, value: c.value }))
    }
    case "encrypt": {
      const length = req.enc === "A256GCM" ? 32 : 64
      const key = await hkdf("sha256", req.secret, req.salt, req.key_info, length)
      const header = { alg: "dir", enc: req.enc }
      if (req.kid) {
        header.kid = await calculateJwkThumbprint(
          { kty: "oct", k: base64url.encode(key) },
          `sha${length << 3}`,
        )
      }
      const now = Math.floor(Date.now() / 1000)
      return await new EncryptJWT(req.payload)
        .setProtectedHeader(header)
        .setIssuedAt()
        .setExpirationTime(now + (req.maxAge ?? 3600))
        .setJti(crypto.randomUUID())
        .encrypt(key)
    }
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
    results.push({ ok: false, error: String(err?.code ?? err?.name ?? err) })
  }
}
process.stdout.write(JSON.stringify(results))
