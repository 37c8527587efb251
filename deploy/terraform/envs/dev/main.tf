module "skyjoin" {
  source = "../../modules/skyjoin"

  project               = var.project
  env                   = "dev"
  region                = var.region
  image                 = var.image
  github_repository     = var.github_repository
  github_environment    = "dev"
  notification_channels = var.notification_channels
  weather_api_key       = var.weather_api_key
  collect_url           = var.collect_url

  bigquery_location  = "EU"
  firestore_location = "eur3"
  retention_days     = 30

  # Cheap while idle: the push worker scales to zero.
  worker_mode = "push"
  services = {
    ingest  = { max_instances = 3 }
    enrich  = { max_instances = 3 }
    serve   = { min_instances = 1, max_instances = 2 }
    deliver = { min_instances = 1, max_instances = 2 }
  }

  alerts = { backlog_age_seconds = 900, latency_p99_seconds = 120 }

  # dev can be torn down and made again.
  deletion_protection = false
}
