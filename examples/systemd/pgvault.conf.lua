-- /etc/pgvault/pgvault.conf.lua for examples/systemd/pgvault-nightly.service:
-- the secrets are the service's systemd credentials (LoadCredential=), read
-- with credential "NAME"; the bucket's keys come through
-- AWS_SHARED_CREDENTIALS_FILE, the endpoint from /etc/pgvault/aws_config.
-- Check it with: sudo systemd-run -P --wait -p LoadCredential=... or, as root,
--   CREDENTIALS_DIRECTORY=/etc/pgvault/credentials pgvault config check --env prod
defaults {
  keep_daily = 7,
  keep_weekly = 4,
  keep_monthly = 12,
}

environment "prod" {
  db = credential "prod_database_url",
  to = "s3://my-db-backups/prod/",
  profile = "b2",
  recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
  identity = env "AGE_IDENTITY_FILE",  -- the path of the age_identity credential (the unit sets it)
  ping = credential "hc_ping_url",
}
