# worker_mode = "dataflow": the Beam pipeline reads the events subscription
# in place of the enrich service. Its workers run as their own account with
# what the pipeline uses (this account is not a stage of internal/app, so
# it is not part of go test ./deploy/terraform's check).

locals {
  dataflow = var.worker_mode == "dataflow"
  dataflow_grants = local.dataflow ? {
    "roles/dataflow.worker on project"     = { role = "roles/dataflow.worker", on = "project" }
    "roles/bigquery.dataEditor on dataset" = { role = "roles/bigquery.dataEditor", on = "dataset" }
  } : {}
}

resource "google_service_account" "dataflow" {
  count = local.dataflow ? 1 : 0

  project      = var.project
  account_id   = "skyjoin-dataflow"
  display_name = "skyjoin Dataflow workers"
}

# The template spec (templates/skyjoin-dataflow.json, uploaded by the
# delivery pipeline) and the job's temporary and staging files.
resource "google_storage_bucket" "dataflow" {
  count = local.dataflow ? 1 : 0

  project                     = var.project
  name                        = "${var.project}-skyjoin-dataflow"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["tmp/", "staging/"]
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "dataflow" {
  for_each = local.dataflow ? { workers = google_service_account.dataflow[0].member, deployer = module.wif.deployer_member } : {}

  bucket = google_storage_bucket.dataflow[0].name
  role   = "roles/storage.objectAdmin"
  member = each.value
}

resource "google_project_iam_member" "dataflow" {
  for_each = { for k, g in local.dataflow_grants : k => g if g.on == "project" }

  project = var.project
  role    = each.value.role
  member  = google_service_account.dataflow[0].member
}

resource "google_bigquery_dataset_iam_member" "dataflow" {
  for_each = { for k, g in local.dataflow_grants : k => g if g.on == "dataset" }

  project    = var.project
  dataset_id = module.bigquery.dataset_id
  role       = each.value.role
  member     = google_service_account.dataflow[0].member
}

resource "google_pubsub_subscription_iam_member" "dataflow" {
  count = local.dataflow ? 1 : 0

  project      = var.project
  subscription = module.pubsub.subscription_names["events-enrich"]
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.dataflow[0].member
}

resource "google_pubsub_topic_iam_member" "dataflow" {
  count = local.dataflow ? 1 : 0

  project = var.project
  topic   = module.pubsub.topic_names["deadletter"]
  role    = "roles/pubsub.publisher"
  member  = google_service_account.dataflow[0].member
}

resource "google_pubsub_topic_iam_member" "dataflow_records" {
  count = local.dataflow ? 1 : 0

  project = var.project
  topic   = module.pubsub.topic_names["records"]
  role    = "roles/pubsub.publisher"
  member  = google_service_account.dataflow[0].member
}

# The PII policy's key, the one serve and the worker use (the default policy
# hashes, and the hashes must join).
resource "google_secret_manager_secret_iam_member" "dataflow_pii" {
  count = local.dataflow ? 1 : 0

  project   = var.project
  secret_id = google_secret_manager_secret.this["skyjoin-pii-key"].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dataflow[0].member
}

resource "google_secret_manager_secret_iam_member" "dataflow" {
  count = local.dataflow && var.weather_api_key ? 1 : 0

  project   = var.project
  secret_id = google_secret_manager_secret.dataflow_weather[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dataflow[0].member
}

resource "google_secret_manager_secret" "dataflow_weather" {
  count = local.dataflow && var.weather_api_key ? 1 : 0

  project   = var.project
  secret_id = "skyjoin-weather-api-key"
  labels    = local.labels

  replication {
    auto {}
  }
}

module "dataflow" {
  source = "../dataflow"
  count  = local.dataflow ? 1 : 0

  project               = var.project
  region                = var.region
  bucket                = google_storage_bucket.dataflow[0].name
  service_account_email = google_service_account.dataflow[0].email
  subscription          = module.pubsub.events_subscription
  deadletter_topic      = module.pubsub.topic_ids["deadletter"]
  bq_table              = module.bigquery.table_id
  weather_url           = var.weather_url
  weather_quota         = var.weather_quota
  records_topic         = module.pubsub.topic_ids["records"]
  pii_key               = "sm://projects/${var.project}/secrets/skyjoin-pii-key/versions/latest"
  weather_api_key       = var.weather_api_key ? "sm://projects/${var.project}/secrets/skyjoin-weather-api-key/versions/latest" : ""
  max_workers           = var.dataflow_max_workers
  labels                = local.labels

  depends_on = [
    google_project_iam_member.dataflow,
    google_bigquery_dataset_iam_member.dataflow,
    google_pubsub_subscription_iam_member.dataflow,
    google_pubsub_topic_iam_member.dataflow,
    google_pubsub_topic_iam_member.dataflow_records,
    google_secret_manager_secret_iam_member.dataflow_pii,
    google_storage_bucket_iam_member.dataflow,
  ]
}
