// A consumer of an evproc pull subscription (docs/consumers.md): read a batch under a
// lease (long poll), handle it, acknowledge it -- in one transaction with the effects
// it writes to the same database, so each effect happens exactly once. A failing event
// is nacked: it is retried with backoff (or ends in the dead letters), and the later
// events of its key wait behind it. SIGTERM finishes the batch in hand and exits.
//
//   PGHOST=... PGDATABASE=... node consumer.js SUBSCRIPTION [EFFECT_TABLE]
//
// Environment: the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE, ...),
// EVPROC_BATCH (most events per read, 100), EVPROC_WAIT (seconds a read waits for
// events, 5), EVPROC_LEASE (seconds, default: the subscription's lease_duration),
// EVPROC_HANDLE_MS (milliseconds of pretend work per event, 0).
// With EFFECT_TABLE (columns event_id bigint, key text, payload jsonb, attempt int),
// each event is inserted there in the acknowledging transaction; without, it is
// printed as a JSON line. An event whose payload has "fail": true is nacked.
'use strict';

const { Client } = require('pg');

const subscription = process.argv[2];
const effectTable = process.argv[3];
if (!subscription) {
  console.error('usage: consumer.js SUBSCRIPTION [EFFECT_TABLE]');
  process.exit(2);
}
const batch = Number(process.env.EVPROC_BATCH || 100);
const waitSeconds = Number(process.env.EVPROC_WAIT || 5);
const leaseSeconds = process.env.EVPROC_LEASE ? Number(process.env.EVPROC_LEASE) : null;
const workMs = Number(process.env.EVPROC_HANDLE_MS || 0);

let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
process.on('SIGINT', () => { stopping = true; });

// What the application does with one event. Throwing fails (nacks) it.
async function handle(client, event) {
  if (workMs > 0) await new Promise((resolve) => setTimeout(resolve, workMs));
  if (event.payload && event.payload.fail === true) throw new Error(`asked to fail (event ${event.id})`);
  if (effectTable) {
    // Identifiers cannot be parameters: quote the table name as an identifier.
    const table = effectTable.split('.').map((part) => `"${part.replace(/"/g, '""')}"`).join('.');
    await client.query(`INSERT INTO ${table} (event_id, key, payload, attempt) VALUES ($1, $2, $3, $4)`,
                       [event.id, event.key, event.payload, event.attempt]);
  } else {
    process.stdout.write(JSON.stringify(event) + '\n');
  }
}

async function main() {
  const client = new Client();  // libpq environment variables
  await client.connect();
  // No SET here: behind a transaction-mode pooler session settings do not stick. A
  // statement_timeout (server, role or pooler setting) must exceed EVPROC_WAIT.
  while (!stopping) {
    const { rows } = await client.query(
      'SELECT lease, id::text AS id, key, type, payload, headers, enqueued_at, attempt, replay ' +
        'FROM evproc_read($1, $2, $3::interval, $4::interval)',
      [subscription, batch, leaseSeconds === null ? null : `${leaseSeconds} seconds`, `${waitSeconds} seconds`]);
    if (rows.length === 0) continue;
    const lease = rows[0].lease;
    try {
      await client.query('BEGIN');
      const failedKeys = new Set();
      for (const event of rows) {
        // Later events of a failed key wait behind it (the ack leaves them in line).
        if (event.key !== null && failedKeys.has(event.key)) continue;
        await client.query('SAVEPOINT event');
        try {
          await handle(client, event);
          await client.query('RELEASE SAVEPOINT event');
        } catch (error) {
          await client.query('ROLLBACK TO SAVEPOINT event');
          await client.query('SELECT evproc_nack($1, $2, $3, $4)',
                             [subscription, lease, event.id, String(error.message || error)]);
          if (event.key !== null) failedKeys.add(event.key);
        }
      }
      await client.query('SELECT evproc_ack($1, $2)', [subscription, lease]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      if (error.code === 'EV001') {
        // The lease expired (or was taken over): nothing of this batch is committed, and
        // its events come again.
        console.error(`lease lost, its events will be redelivered: ${error.message}`);
        continue;
      }
      throw error;
    }
  }
  await client.end();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
