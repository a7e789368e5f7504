-- pgvault.conf.lua for examples/github-actions/nightly-db-backup.yml: settings
-- only; every secret is a reference to an environment variable that the
-- workflow fills from the repository's secrets. Check it with
--   pgvault config check --env prod
defaults {
  keep_daily = 7,
  keep_weekly = 4,
  keep_monthly = 12,
}

environment "prod" {
  db = env "PROD_DATABASE_URL",
  to = "s3://my-db-backups/prod/",  -- endpoint, region and keys: AWS_* variables of the workflow
  recipient = env "BACKUP_AGE_RECIPIENT",
  ping = env "HC_PING_URL",
  drill_every = "week",             -- a restore drill on the first run of each week
}
