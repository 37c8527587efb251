# The topics and durable subscriptions skyjoin expects (docs/gcp.md, "Topics
# and subscriptions"); the processes run with create=false and check at
# start that these exist. Ephemeral subscriptions of records are made by
# each serve instance itself.

data "google_project" "this" {
  project_id = var.project
}

locals {
  labels        = merge(var.labels, { app = "skyjoin" })
  service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  # The subscription of events that the worker reads, by mode.
  events_subscription = var.worker_mode == "push" ? "events-push" : "events-enrich"
}

resource "google_pubsub_topic" "this" {
  for_each = toset(["events", "deadletter", "records"])

  project = var.project
  name    = "${var.prefix}-${each.key}"
  labels  = local.labels
}

# The worker's subscription of events: pulled by the enrich service or the
# Dataflow job, or pushed to the enrich service. Only one exists: a second
# subscription would get every message again.
resource "google_pubsub_subscription" "events" {
  project = var.project
  name    = "${var.prefix}-${local.events_subscription}"
  topic   = google_pubsub_topic.this["events"].id
  labels  = local.labels

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = "" # never expires
  }

  retry_policy {
    minimum_backoff = var.min_backoff
    maximum_backoff = var.max_backoff
  }

  # deliveryAttempt reaches the worker only with a dead-letter policy.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this["deadletter"].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  dynamic "push_config" {
    for_each = var.worker_mode == "push" ? [1] : []
    content {
      push_endpoint = "${var.push_endpoint}/v1/push/events"
      oidc_token {
        service_account_email = var.push_service_account_email
        # skyjoin checks tokens for the service's URL, not the endpoint.
        audience = var.push_endpoint
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.worker_mode != "push" || (var.push_endpoint != "" && var.push_service_account_email != "")
      error_message = "worker_mode push needs push_endpoint and push_service_account_email."
    }
  }

  # The dead letters need their browse subscription first, or Pub/Sub drops them.
  depends_on = [google_pubsub_subscription.deadletter_browse]
}

# Keeps the dead letters for browsing and replay (GET /v1/deadletters,
# skyjoin replay): Pub/Sub keeps a message only for subscriptions that exist
# when it is published.
resource "google_pubsub_subscription" "deadletter_browse" {
  project = var.project
  name    = "${var.prefix}-deadletter-browse"
  topic   = google_pubsub_topic.this["deadletter"].id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = var.deadletter_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

# Webhook delivery's subscription, shared by every deliver instance. No
# dead-letter policy: records are not events to replay.
resource "google_pubsub_subscription" "records_deliver" {
  project = var.project
  name    = "${var.prefix}-records-deliver"
  topic   = google_pubsub_topic.this["records"].id
  labels  = local.labels

  ack_deadline_seconds       = var.deliver_ack_deadline_seconds
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = var.min_backoff
    maximum_backoff = var.max_backoff
  }
}

# Dead-letter forwarding is done by the Pub/Sub service agent: it publishes
# to the dead-letter topic and acks on the source subscription.
resource "google_pubsub_topic_iam_member" "service_agent_deadletter" {
  project = var.project
  topic   = google_pubsub_topic.this["deadletter"].name
  role    = "roles/pubsub.publisher"
  member  = local.service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_events" {
  project      = var.project
  subscription = google_pubsub_subscription.events.name
  role         = "roles/pubsub.subscriber"
  member       = local.service_agent
}

resource "google_service_account_iam_member" "service_agent_token_creator" {
  count = var.worker_mode == "push" && var.grant_token_creator_to_service_agent ? 1 : 0

  service_account_id = "projects/${var.project}/serviceAccounts/${var.push_service_account_email}"
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.service_agent
}
