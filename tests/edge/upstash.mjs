// An Upstash-REST server for the tests, over a real redis-server, bound to
// 127.0.0.1 only (the package's own CLI listens on every interface).
//
//   node tests/edge/upstash.mjs [port] [redis-url] [token]
//
// Each argument falls back to UPSTASH_PORT, UPSTASH_REDIS_URL and UPSTASH_TOKEN,
// then to 8079, redis://127.0.0.1:6390/ and the tests' default token. Prints
// "upstash ready on http://127.0.0.1:PORT" once it listens.
import { serve } from "@hono/node-server";
import { createApp } from "@humanwhocodes/upstash-redis-server";

const [portArg, redisArg, tokenArg] = process.argv.slice(2);
const port = Number.parseInt(portArg || process.env.UPSTASH_PORT || "8079", 10);
const redisUrl = redisArg || process.env.UPSTASH_REDIS_URL || "redis://127.0.0.1:6390/";
const token = tokenArg || process.env.UPSTASH_TOKEN || "oblivious-test-token";

if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`upstash.mjs: bad port ${JSON.stringify(portArg)}`);
  process.exit(2);
}

const app = createApp({ token, redisUrl });
const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port }, (info) => {
  console.log(`upstash ready on http://127.0.0.1:${info.port} (redis ${redisUrl})`);
});
server.on("error", (err) => {
  console.error(`upstash.mjs: ${err.message}`);
  process.exit(1);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
