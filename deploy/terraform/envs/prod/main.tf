module "skyjoin" {
  source = "../../modules/skyjoin"

  project               = var.project
  env                   = "prod"
  region                = var.region
  image                 = var.image
  github_repository     = var.github_repository
  github_environment    = "prod" # the environment with required reviewers
  notification_channels = var.notification_channels
  weather_api_key       = var.weather_api_key
  collect_url           = var.collect_url

  bigquery_location  = "EU"
  firestore_location = "eur3"
  retention_days     = 400

  # A steady stream: pull with instance-based billing and min instances, no
  # cold start (docs/gcp.md).
  worker_mode = "pull"
  services = {
    ingest  = { min_instances = 1, max_instances = 50 }
    enrich  = { min_instances = 2, max_instances = 20, cpu = "2", memory = "2Gi" }
    serve   = { min_instances = 2, max_instances = 20 }
    deliver = { min_instances = 2, max_instances = 10 }
  }

  alerts = { backlog_age_seconds = 300, error_ratio = 0.02, latency_p99_seconds = 30 }
}
