# One Cloud Run service per stage (docs/gcp.md, "How each background stage
# runs"): ingest and a push worker on request-based billing, scaling to
# zero; a pull worker, serve (live streams), deliver (webhook retries) and
# collect (a poller) on instance-based billing with min instances.

locals {
  # Every service: the broker, the store, the registry and the exporter.
  common_env = {
    SKYJOIN_BROKER    = "pubsub://${var.project}?prefix=${var.prefix}"
    SKYJOIN_STORE     = module.bigquery.store_url
    SKYJOIN_REGISTRY  = module.firestore.registry_url
    SKYJOIN_TELEMETRY = "gcp"
  }

  defaults = {
    ingest  = { instance_billing = false, min_instances = 0, max_instances = 20, concurrency = 80, timeout = "60s", memory = "512Mi" }
    enrich  = { instance_billing = var.worker_mode == "pull", min_instances = var.worker_mode == "pull" ? 1 : 0, max_instances = 10, concurrency = 80, timeout = "120s", memory = "1Gi" }
    serve   = { instance_billing = true, min_instances = 1, max_instances = 10, concurrency = 200, timeout = "3600s", memory = "512Mi" }
    deliver = { instance_billing = true, min_instances = 1, max_instances = 5, concurrency = 80, timeout = "60s", memory = "512Mi" }
    collect = { instance_billing = true, min_instances = 1, max_instances = 1, concurrency = 10, timeout = "60s", memory = "512Mi" }
  }

  # Each service's memory, which is also its memory budget
  # (SKYJOIN_MEMORY_LIMIT: the Go heap's soft limit is set from it).
  memory = { for k, d in local.defaults : k => coalesce(try(var.services[k].memory, null), d.memory) }

  # On Cloud Run skyjoin takes Google ID tokens for the service's URL. A
  # public service would take anyone's: accept those of the deployer (the
  # delivery pipeline's smoke test) and of idtoken_callers only; the push
  # worker, only the push subscription's.
  idtoken_emails = join(",", concat([module.wif.deployer_email], var.idtoken_callers))

  stage_env = {
    ingest = { SKYJOIN_AUTH_IDTOKEN_EMAILS = local.idtoken_emails }
    enrich = {
      SKYJOIN_WEATHER_URL         = var.weather_url
      SKYJOIN_WEATHER_QUOTA       = var.weather_quota
      SKYJOIN_AUTH_IDTOKEN_EMAILS = var.worker_mode == "push" ? google_service_account.push[0].email : local.idtoken_emails
    }
    # ID tokens on serve read (the smoke test reads its event back); the
    # default scopes (ingest, push) are the ingest and push routes'.
    serve   = { SKYJOIN_AUTH_IDTOKEN_EMAILS = local.idtoken_emails, SKYJOIN_AUTH_IDTOKEN_SCOPES = "read,stream" }
    deliver = { SKYJOIN_AUTH_IDTOKEN_EMAILS = local.idtoken_emails }
    collect = { SKYJOIN_AUTH_IDTOKEN_EMAILS = local.idtoken_emails, SKYJOIN_COLLECT_URL = var.collect_url }
  }
}

module "service" {
  source   = "../cloudrun"
  for_each = local.deployed

  project               = var.project
  region                = var.region
  name                  = "skyjoin-${each.key}"
  image                 = var.image
  args                  = local.service_args[each.value]
  service_account_email = google_service_account.service[each.key].email
  env = merge(
    local.common_env,
    local.stage_env[each.key],
    { for flag, id in local.secrets_of[each.key] : "SKYJOIN_${upper(replace(flag, "-", "_"))}" => "sm://projects/${var.project}/secrets/${id}/versions/latest" },
    { SKYJOIN_MEMORY_LIMIT = local.memory[each.key] },
  )

  instance_billing = local.defaults[each.key].instance_billing
  min_instances    = coalesce(try(var.services[each.key].min_instances, null), local.defaults[each.key].min_instances)
  max_instances    = coalesce(try(var.services[each.key].max_instances, null), local.defaults[each.key].max_instances)
  concurrency      = coalesce(try(var.services[each.key].concurrency, null), local.defaults[each.key].concurrency)
  cpu              = coalesce(try(var.services[each.key].cpu, null), "1")
  memory           = local.memory[each.key]
  request_timeout  = local.defaults[each.key].timeout

  public              = contains(var.public_services, each.key)
  invokers            = each.key == "enrich" && var.worker_mode == "push" ? { push = google_service_account.push[0].member } : {}
  deletion_protection = var.deletion_protection
  labels              = local.labels

  # A service starts only once it may use what it checks at start.
  depends_on = [
    google_project_iam_member.service,
    google_bigquery_dataset_iam_member.service,
    google_pubsub_topic_iam_member.service,
    google_pubsub_subscription_iam_member.service,
    google_secret_manager_secret_iam_member.service,
  ]
}

# The identity of the push subscription's OIDC tokens.
resource "google_service_account" "push" {
  count = var.worker_mode == "push" ? 1 : 0

  project      = var.project
  account_id   = "skyjoin-push"
  display_name = "skyjoin Pub/Sub push to the enrich service"
}
