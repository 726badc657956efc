// Logs in to a running Runnel with node-postgres (npm `pg`) and prints one JSON line: the
// session's user and whether the connection is encrypted, or the error's SQLSTATE and
// message. Usage: node login.js HOST PORT USER PASSWORD [CA_FILE]
// With CA_FILE the connection uses TLS and verifies the server's certificate against it
// (sslmode=verify-full).
"use strict";
const fs = require("fs");
const { Client } = require("pg");

async function main() {
  const [host, port, user, password, ca] = process.argv.slice(2);
  const config = { host, port: Number(port), user, password, database: "runnel" };
  if (ca) {
    config.ssl = { ca: fs.readFileSync(ca, "utf8"), rejectUnauthorized: true };
  }
  const client = new Client(config);
  try {
    await client.connect();
    const result = await client.query("SELECT current_user AS who");
    const encrypted = Boolean(client.connection.stream.encrypted);
    console.log(JSON.stringify({ user: result.rows[0].who, encrypted }));
    await client.end();
  } catch (error) {
    console.log(JSON.stringify({ code: error.code || null, message: error.message }));
  }
}

main();
