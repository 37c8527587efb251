variable "project" {
  description = "Google Cloud project id of this environment."
  type        = string
}

variable "env" {
  description = "Environment name (dev, staging, prod): labels and monitoring names."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services, Artifact Registry and Dataflow."
  type        = string
}

variable "prefix" {
  description = "Start of every Pub/Sub topic and subscription id."
  type        = string
  default     = "skyjoin"
}

variable "image" {
  description = "The skyjoin image the services are created with (REGION-docker.pkg.dev/PROJECT/skyjoin/skyjoin@sha256:...). Later deployments change it outside Terraform (gcloud run deploy)."
  type        = string
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset (EU, US or a region)."
  type        = string
}

variable "dataset" {
  description = "BigQuery dataset id."
  type        = string
  default     = "skyjoin"
}

variable "retention_days" {
  description = "Days the events are kept (the table's partition expiration); 0 keeps them forever."
  type        = number
}

variable "firestore_location" {
  description = "Location of the Firestore database of the registry (eur3, nam5 or a region)."
  type        = string
}

variable "worker_mode" {
  description = "How events are enriched: push (the enrich service, request-based billing, scales to zero), pull (the enrich service with instance-based billing and min instances) or dataflow (the Beam pipeline on Dataflow; no enrich service). docs/gcp.md compares them."
  type        = string
  validation {
    condition     = contains(["push", "pull", "dataflow"], var.worker_mode)
    error_message = "worker_mode must be push, pull or dataflow."
  }
}

variable "services" {
  description = "Scaling and size of each service (ingest, enrich, serve, deliver, collect); what is left out keeps its default."
  type = map(object({
    min_instances = optional(number)
    max_instances = optional(number)
    cpu           = optional(string)
    memory        = optional(string)
    concurrency   = optional(number)
  }))
  default = {}
}

variable "public_services" {
  description = "Services anyone may reach (roles/run.invoker for allUsers; skyjoin itself checks API keys and ID tokens). Others take only their invokers."
  type        = list(string)
  default     = ["ingest", "serve", "deliver"]
}

variable "idtoken_callers" {
  description = "Service accounts (emails) whose Google ID tokens the services accept, besides the deployer's: skyjoin otherwise takes a token of any Google account for a public service's URL."
  type        = list(string)
  default     = []
}

variable "weather_url" {
  description = "Base URL of the Open-Meteo API."
  type        = string
  default     = "https://api.open-meteo.com"
}

variable "weather_quota" {
  description = "The weather provider's quota (--weather-quota), LIMIT/PERIOD,...; default Open-Meteo's free tier, skyjoin's default."
  type        = string
  default     = "600/1m,5000/1h,10000/24h"
}

variable "weather_api_key" {
  description = "Use a weather API key (Open-Meteo's commercial endpoint) from the secret skyjoin-weather-api-key."
  type        = bool
  default     = false
}

variable "collect_url" {
  description = "The users API the collect service polls (randomuser-compatible); empty: it collects nothing."
  type        = string
  default     = ""
}

variable "github_repository" {
  description = "GitHub repository (OWNER/NAME) whose workflows may deploy here."
  type        = string
}

variable "github_environment" {
  description = "If set, only workflow jobs in this GitHub environment may deploy here."
  type        = string
  default     = ""
}

variable "notification_channels" {
  description = "Monitoring notification channels of every alert policy."
  type        = list(string)
  default     = []
}

variable "alerts" {
  description = "Alert thresholds."
  type = object({
    backlog_age_seconds = optional(number, 300)
    error_ratio         = optional(number, 0.05)
    latency_p99_seconds = optional(number, 30)
  })
  default = {}
}

variable "max_delivery_attempts" {
  description = "Pub/Sub's dead-letter policy on the events subscription (above the worker's --enrich-max-attempts)."
  type        = number
  default     = 10
}

variable "dataflow_max_workers" {
  description = "With worker_mode dataflow: the most Dataflow workers."
  type        = number
  default     = 3
}

variable "deletion_protection" {
  description = "Protect the table, the Firestore database and the services from terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on every resource that takes them."
  type        = map(string)
  default     = {}
}
