# skyjoin on Google Cloud, one environment: every module wired together.
# The roots under envs/ call this with their own settings.

data "google_project" "this" {
  project_id = var.project
}

locals {
  labels = merge(var.labels, { app = "skyjoin", env = var.env })
  # Cloud Run's deterministic URL of the enrich service: the push
  # endpoint and the audience its tokens are checked against (known before
  # the service exists, so the subscription needs no edge to it).
  enrich_url = "https://skyjoin-enrich-${data.google_project.this.number}.${var.region}.run.app"
}

module "pubsub" {
  source = "../pubsub"

  project                    = var.project
  prefix                     = var.prefix
  labels                     = local.labels
  worker_mode                = var.worker_mode
  push_endpoint              = var.worker_mode == "push" ? local.enrich_url : ""
  push_service_account_email = var.worker_mode == "push" ? google_service_account.push[0].email : ""
  max_delivery_attempts      = var.max_delivery_attempts
}

module "bigquery" {
  source = "../bigquery"

  project             = var.project
  dataset             = var.dataset
  location            = var.bigquery_location
  retention_days      = var.retention_days
  deletion_protection = var.deletion_protection
  labels              = local.labels
}

module "firestore" {
  source = "../firestore"

  project           = var.project
  location          = var.firestore_location
  delete_protection = var.deletion_protection
}

module "artifact_registry" {
  source = "../artifact_registry"

  project  = var.project
  location = var.region
  writers  = { deployer = module.wif.deployer_member }
}

module "wif" {
  source = "../wif"

  project                  = var.project
  github_repository        = var.github_repository
  github_environment       = var.github_environment
  runtime_service_accounts = merge({ for stage, sa in google_service_account.service : stage => sa.email }, var.worker_mode == "dataflow" ? { dataflow = google_service_account.dataflow[0].email } : {})
}

module "monitoring" {
  source = "../monitoring"

  project                 = var.project
  env                     = var.env
  events_subscription     = module.pubsub.events_subscription_name
  deadletter_subscription = module.pubsub.subscription_names["deadletter-browse"]
  services                = [for stage in keys(local.deployed) : "skyjoin-${stage}"]
  notification_channels   = var.notification_channels
  backlog_age_seconds     = var.alerts.backlog_age_seconds
  error_ratio             = var.alerts.error_ratio
  latency_p99_seconds     = var.alerts.latency_p99_seconds
}
