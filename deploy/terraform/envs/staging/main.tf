module "skyjoin" {
  source = "../../modules/skyjoin"

  project               = var.project
  env                   = "staging"
  region                = var.region
  image                 = var.image
  github_repository     = var.github_repository
  github_environment    = "staging"
  notification_channels = var.notification_channels
  weather_api_key       = var.weather_api_key
  collect_url           = var.collect_url

  bigquery_location  = "EU"
  firestore_location = "eur3"
  retention_days     = 90

  # Prod's shape at a smaller size; pull, as prod, so that a release is
  # tested the way prod runs it.
  worker_mode = "pull"
  services = {
    ingest  = { max_instances = 5 }
    enrich  = { min_instances = 1, max_instances = 3 }
    serve   = { min_instances = 1, max_instances = 3 }
    deliver = { min_instances = 1, max_instances = 2 }
  }

  alerts = { backlog_age_seconds = 600, latency_p99_seconds = 60 }
}
