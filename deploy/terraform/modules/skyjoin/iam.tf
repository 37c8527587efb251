# Least privilege, checked against the code: go test ./deploy/terraform
# derives each service's grants from the stage it runs (app.CloudGrants:
# the roles each Google backend declares for what the stage uses of it)
# and fails unless service_grants plus the secrets in service_secrets are
# exactly that. Change the code and this table together.

locals {
  # What each service runs: the stage command and its flags (the rest of
  # its configuration is environment, local.common_env and services.tf).
  service_args = {
    ingest      = ["ingest"]
    collect     = ["collect"]
    enrich_push = ["enrich", "--serve=false", "--enrich-pull=false"]
    enrich_pull = ["enrich", "--serve=false"]
    serve       = ["serve"]
    deliver     = ["deliver"]
  }

  # Secret flags of each service, as sm:// references: flag => secret id.
  service_secrets = {
    ingest  = {}
    collect = {}
    enrich_push = {
      "pii-key"         = "skyjoin-pii-key"
      "weather-api-key" = "skyjoin-weather-api-key"
    }
    enrich_pull = {
      "pii-key"         = "skyjoin-pii-key"
      "weather-api-key" = "skyjoin-weather-api-key"
    }
    serve   = { "pii-key" = "skyjoin-pii-key" }
    deliver = { "webhook-secret-key" = "skyjoin-webhook-secret-key" }
  }

  # The roles of each service's account, besides secretAccessor on its
  # secrets. on: project, dataset, topic/ID or subscription/ID (ids without
  # the prefix). custom/ROLE is a custom role of local.custom_roles.
  service_grants = {
    ingest = [
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.publisher", on = "topic/events" },
      { role = "roles/pubsub.subscriber", on = "subscription/deadletter-browse" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
    collect = [
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.publisher", on = "topic/events" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
    enrich_push = [
      { role = "roles/bigquery.dataEditor", on = "dataset" },
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.publisher", on = "topic/deadletter" },
      { role = "roles/pubsub.publisher", on = "topic/records" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
    enrich_pull = [
      { role = "roles/bigquery.dataEditor", on = "dataset" },
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.publisher", on = "topic/deadletter" },
      { role = "roles/pubsub.publisher", on = "topic/records" },
      { role = "roles/pubsub.subscriber", on = "subscription/events-enrich" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
    serve = [
      { role = "roles/bigquery.dataEditor", on = "dataset" },
      { role = "roles/bigquery.dataViewer", on = "dataset" },
      { role = "roles/bigquery.jobUser", on = "project" },
      { role = "custom/skyjoinEphemeralSubscriptions", on = "project" },
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.subscriber", on = "subscription/deadletter-browse" },
      { role = "roles/pubsub.subscriber", on = "topic/records" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
    deliver = [
      { role = "roles/datastore.user", on = "project" },
      { role = "roles/pubsub.subscriber", on = "subscription/records-deliver" },
      { role = "roles/telemetry.metricsWriter", on = "project" },
      { role = "roles/telemetry.tracesWriter", on = "project" },
    ]
  }

  # Custom roles (pubsub.EphemeralRole and pubsub.EphemeralPermissions).
  custom_roles = {
    skyjoinEphemeralSubscriptions = {
      title       = "skyjoin live-stream subscriptions"
      description = "Create, pull and delete the ephemeral subscriptions of the records topic that each serve instance makes."
      permissions = [
        "pubsub.subscriptions.consume",
        "pubsub.subscriptions.create",
        "pubsub.subscriptions.delete",
      ]
    }
  }

  # The services of this deployment, by stage: the key of their row above.
  deployed = merge(
    { ingest = "ingest", collect = "collect", serve = "serve", deliver = "deliver" },
    var.worker_mode == "dataflow" ? {} : { enrich = "enrich_${var.worker_mode}" },
  )

  # The secrets each deployed service uses (the weather key only if asked for).
  secrets_of = {
    for stage, row in local.deployed : stage => {
      for flag, id in local.service_secrets[row] : flag => id if flag != "weather-api-key" || var.weather_api_key
    }
  }

  grants = flatten([
    for stage, row in local.deployed : concat(
      [for g in local.service_grants[row] : { stage = stage, role = g.role, on = g.on }],
      [for flag, id in local.secrets_of[stage] : { stage = stage, role = "roles/secretmanager.secretAccessor", on = "secret/${id}" }],
    )
  ])

  # The grants by the kind of resource they are on, keyed "STAGE ROLE ON".
  grants_on = {
    for kind in ["project", "dataset", "topic", "subscription", "secret"] : kind => {
      for g in local.grants : "${g.stage} ${g.role} ${g.on}" => g if split("/", g.on)[0] == kind
    }
  }
}

# One service account per service.
resource "google_service_account" "service" {
  for_each = local.deployed

  project      = var.project
  account_id   = "skyjoin-${each.key}"
  display_name = "skyjoin ${each.key} (Cloud Run)"
}

resource "google_project_iam_custom_role" "this" {
  for_each = local.custom_roles

  project     = var.project
  role_id     = each.key
  title       = each.value.title
  description = each.value.description
  permissions = each.value.permissions
}

resource "google_project_iam_member" "service" {
  for_each = local.grants_on["project"]

  project = var.project
  role    = startswith(each.value.role, "custom/") ? google_project_iam_custom_role.this[trimprefix(each.value.role, "custom/")].name : each.value.role
  member  = google_service_account.service[each.value.stage].member
}

resource "google_bigquery_dataset_iam_member" "service" {
  for_each = local.grants_on["dataset"]

  project    = var.project
  dataset_id = module.bigquery.dataset_id
  role       = each.value.role
  member     = google_service_account.service[each.value.stage].member
}

resource "google_pubsub_topic_iam_member" "service" {
  for_each = local.grants_on["topic"]

  project = var.project
  topic   = module.pubsub.topic_names[trimprefix(each.value.on, "topic/")]
  role    = each.value.role
  member  = google_service_account.service[each.value.stage].member
}

resource "google_pubsub_subscription_iam_member" "service" {
  for_each = local.grants_on["subscription"]

  project      = var.project
  subscription = module.pubsub.subscription_names[trimprefix(each.value.on, "subscription/")]
  role         = each.value.role
  member       = google_service_account.service[each.value.stage].member
}

resource "google_secret_manager_secret_iam_member" "service" {
  for_each = local.grants_on["secret"]

  project   = var.project
  secret_id = google_secret_manager_secret.this[trimprefix(each.value.on, "secret/")].secret_id
  role      = each.value.role
  member    = google_service_account.service[each.value.stage].member
}

# The secrets the services read. Terraform makes the secrets, never their
# values: add a version by hand before the first deploy (docs/deploy.md).
resource "google_secret_manager_secret" "this" {
  for_each = toset(distinct(flatten([for stage, s in local.secrets_of : values(s)])))

  project   = var.project
  secret_id = each.key
  labels    = merge(var.labels, { app = "skyjoin" })

  replication {
    auto {}
  }
}
