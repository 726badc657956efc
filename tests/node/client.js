// node-postgres (npm `pg`) as its users use it, against a running Runnel. Prints one JSON
// object with what each step returned; tests/python/test_node_postgres.py checks it.
"use strict";
const { Client } = require("pg");

async function main() {
  const [host, port] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), user: "runnel", database: "runnel" });
  await client.connect();
  const out = {};
  await client.query("CREATE TABLE node_items (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE PRECISION, seen TIMESTAMPTZ)");
  // Parameterized statements go through the extended protocol.
  const inserted = await client.query(
    "INSERT INTO node_items VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)",
    [1, "lamp", 9.5, new Date("2026-06-10T10:00:00Z"), 2, "book", 12.25, null],
  );
  out.insert = inserted.rowCount;
  const rows = await client.query("SELECT id, name, price, seen FROM node_items WHERE id >= $1 ORDER BY id", [1]);
  out.rows = rows.rows.map((r) => [r.id, r.name, r.price, r.seen === null ? null : r.seen.toISOString()]);
  out.fields = rows.fields.map((f) => [f.name, f.dataTypeID]);
  // A transaction that rolls back leaves nothing behind.
  await client.query("BEGIN");
  await client.query("INSERT INTO node_items VALUES (3, 'gone', 1, NULL)");
  await client.query("ROLLBACK");
  out.count = (await client.query("SELECT count(*) AS n FROM node_items")).rows[0].n;
  try {
    await client.query("SELECT no_such_column FROM node_items");
  } catch (error) {
    out.error = [error.code, error.position];
  }
  out.version = (await client.query("SELECT version()")).rows[0].version.split(" ")[0];
  await client.end();
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
