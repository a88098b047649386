// A bank system in Node.js: create a watch list, add a company, tail its alerts.
//
//   node example.js <host:port> <api key> <country> <register number> [alerts to wait for]
//
// Uses only the published contracts in ../../proto (plus googleapis' common
// types), loaded at run time with @grpc/proto-loader: no generated code.
// Prints "READY <cursor>" once the stream is open, then one JSON line per alert.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.join(__dirname, '..', '..');
const definition = protoLoader.loadSync(
  ['creditwatch/v1/watchlists.proto', 'creditwatch/v1/alerts.proto'],
  {
    includeDirs: [path.join(ROOT, 'proto'), path.join(ROOT, 'third_party', 'googleapis')],
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).creditwatch.v1;

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function main() {
  const [address, apiKey, country, registerNumber, wanted = '1'] = process.argv.slice(2);
  if (!registerNumber) {
    console.error('usage: node example.js <host:port> <api key> <country> <register number> [count]');
    process.exit(2);
  }
  const metadata = new grpc.Metadata();
  metadata.add('authorization', `Bearer ${apiKey}`);
  const credentials = grpc.credentials.createInsecure();
  const watchLists = new v1.WatchListService(address, credentials);
  const alerts = new v1.AlertService(address, credentials);

  const created = await call(
    watchLists,
    'CreateWatchList',
    { watchList: { displayName: 'Node.js key accounts', pdThreshold: 0.05 } },
    metadata,
  );
  const watchList = created.watchList.name;
  await call(
    watchLists,
    'AddEntries',
    {
      parent: watchList,
      entries: [
        {
          company: { country, registerNumber },
          exposure: { currencyCode: 'NOK', units: '750000' },
          externalReference: 'node-1',
        },
      ],
    },
    metadata,
  );

  let remaining = Number(wanted);
  const stream = alerts.SubscribeAlerts(
    { filter: { watchLists: [watchList] }, heartbeatIntervalSeconds: 30 },
    metadata,
  );
  stream.on('data', (message) => {
    if (message.heartbeat) {
      if (!stream.ready) {
        stream.ready = true;
        console.log(`READY ${message.heartbeat.cursor}`);
      }
      return;
    }
    console.log(JSON.stringify(message.alert));
    remaining -= 1;
    if (remaining <= 0) {
      stream.cancel();
      process.exit(0);
    }
  });
  stream.on('error', (error) => {
    if (error.code !== grpc.status.CANCELLED) {
      console.error(`stream failed: ${error.code} ${error.details}`);
      process.exit(1);
    }
  });
}

main().catch((error) => {
  console.error(`error: ${error.code ?? ''} ${error.details ?? error.message}`);
  process.exit(1);
});
