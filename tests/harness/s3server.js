'use strict';
// The test S3 server: @20minutes/s3rver (checks SigV4 signatures) on a free
// loopback port, with one key pair taken from the environment (never argv).
// Prints "ready PORT" once it listens. Stops on SIGTERM/SIGINT.
const S3rver = require('@20minutes/s3rver');
const Account = require('@20minutes/s3rver/lib/models/account');

const dir = process.argv[2];
const id = process.env.S3_TEST_ACCESS_KEY_ID;
const secret = process.env.S3_TEST_SECRET_ACCESS_KEY;
if (!dir || !id || !secret) {
  console.error('usage: S3_TEST_ACCESS_KEY_ID=.. S3_TEST_SECRET_ACCESS_KEY=.. node s3server.js DIR');
  process.exit(2);
}
// Only our key pair is valid: the built-in S3RVER/S3RVER one is revoked.
Account.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
Account.DUMMY_ACCOUNT.createKeyPair(id, secret);

const server = new S3rver({
  address: '127.0.0.1',
  port: Number(process.env.S3_TEST_PORT || 0),
  silent: true,
  directory: dir,
  resetOnClose: false,
  allowMismatchedSignatures: false,
});

server.run().then(
  (addr) => console.log(`ready ${addr.port}`),
  (err) => {
    console.error(`s3server: ${err.message}`);
    process.exit(1);
  },
);

const stop = () => server.close().then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
