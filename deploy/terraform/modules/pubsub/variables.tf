variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "prefix" {
  description = "Start of every topic and subscription id: the broker URL's prefix parameter (pubsub://PROJECT?prefix=...)."
  type        = string
  default     = "skyjoin"
}

variable "labels" {
  description = "Labels put on every topic and subscription."
  type        = map(string)
  default     = {}
}

variable "worker_mode" {
  description = "How the events reach the worker: push (a push subscription to the enrich service's POST /v1/push/events), pull (the enrich service pulls PREFIX-events-enrich) or dataflow (the Dataflow job pulls PREFIX-events-enrich)."
  type        = string
  validation {
    condition     = contains(["push", "pull", "dataflow"], var.worker_mode)
    error_message = "worker_mode must be push, pull or dataflow."
  }
}

variable "push_endpoint" {
  description = "With worker_mode push: the enrich service's URL; messages are posted to its /v1/push/events."
  type        = string
  default     = ""
}

variable "push_service_account_email" {
  description = "With worker_mode push: the service account whose OIDC token Pub/Sub sends (it holds roles/run.invoker on the enrich service)."
  type        = string
  default     = ""
}

variable "grant_token_creator_to_service_agent" {
  description = "Give the Pub/Sub service agent roles/iam.serviceAccountTokenCreator on the push service account: needed only in projects made before 8 April 2021."
  type        = bool
  default     = false
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the events subscription: above the worker's --enrich-ack-wait (30s). Push: how long Pub/Sub waits for the answer."
  type        = number
  default     = 60
}

variable "deliver_ack_deadline_seconds" {
  description = "Ack deadline of PREFIX-records-deliver (the deliver stage's ack wait, at most 600 s)."
  type        = number
  default     = 600
}

variable "min_backoff" {
  description = "Retry policy of the durable subscriptions: the least delay before a nacked message comes again."
  type        = string
  default     = "10s"
}

variable "max_backoff" {
  description = "Retry policy of the durable subscriptions: the longest delay before a nacked message comes again."
  type        = string
  default     = "600s"
}

variable "max_delivery_attempts" {
  description = "Dead-letter policy of the events subscription (5-100): keep it above the worker's --enrich-max-attempts (5), which dead-letters with its reason first."
  type        = number
  default     = 10
}

variable "message_retention" {
  description = "How long the events and records subscriptions keep unacked messages (at most 7 days)."
  type        = string
  default     = "604800s"
}

variable "deadletter_retention" {
  description = "How long PREFIX-deadletter-browse keeps dead letters (the broker URL's deadletter_retention; 10m to 7 days)."
  type        = string
  default     = "604800s"
}
