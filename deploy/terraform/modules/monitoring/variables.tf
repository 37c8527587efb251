variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "env" {
  description = "Environment name, shown in the policies' and dashboard's names."
  type        = string
}

variable "events_subscription" {
  description = "Id of the worker's events subscription (PREFIX-events-enrich or PREFIX-events-push)."
  type        = string
}

variable "deadletter_subscription" {
  description = "Id of the dead-letter browse subscription (PREFIX-deadletter-browse)."
  type        = string
}

variable "services" {
  description = "Cloud Run service names of this deployment."
  type        = list(string)
}

variable "notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) alerted by every policy."
  type        = list(string)
  default     = []
}

variable "backlog_age_seconds" {
  description = "Alert when the oldest unacked event is older than this."
  type        = number
  default     = 300
}

variable "error_ratio" {
  description = "Alert when more than this fraction of a service's requests answer 5xx."
  type        = number
  default     = 0.05
}

variable "latency_p99_seconds" {
  description = "Alert when the p99 time from ingest to stored is above this."
  type        = number
  default     = 30
}
