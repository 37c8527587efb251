output "topic_names" {
  description = "Topic ids by short name (events, deadletter, records)."
  value       = { for k, t in google_pubsub_topic.this : k => t.name }
}

output "topic_ids" {
  description = "Topic resource names (projects/P/topics/T) by short name."
  value       = { for k, t in google_pubsub_topic.this : k => t.id }
}

output "subscription_names" {
  description = "Subscription ids by their id without the prefix (events-enrich or events-push, deadletter-browse, records-deliver): the keys of the IAM grants."
  value = {
    (local.events_subscription) = google_pubsub_subscription.events.name
    "deadletter-browse"         = google_pubsub_subscription.deadletter_browse.name
    "records-deliver"           = google_pubsub_subscription.records_deliver.name
  }
}

output "events_subscription" {
  description = "The events subscription of the worker (full resource name)."
  value       = google_pubsub_subscription.events.id
}

output "events_subscription_name" {
  description = "The id of the worker's events subscription (PREFIX-events-enrich or PREFIX-events-push)."
  value       = google_pubsub_subscription.events.name
}

output "service_agent" {
  description = "The project's Pub/Sub service agent (IAM member)."
  value       = local.service_agent
}
