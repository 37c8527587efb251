# The Beam pipeline (nested module dataflow/) as a Dataflow Flex Template
# job: the alternative to the enrich service (worker_mode = "dataflow").
# The template spec is built and uploaded by the delivery pipeline to
# gs://BUCKET/templates/skyjoin-dataflow.json; its parameters are declared
# in dataflow/flextemplate/metadata.json.

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Dataflow region."
  type        = string
}

variable "name" {
  description = "Job name."
  type        = string
  default     = "skyjoin-dataflow"
}

variable "bucket" {
  description = "Bucket of the template spec (templates/skyjoin-dataflow.json) and of the job's temporary and staging files."
  type        = string
}

variable "service_account_email" {
  description = "Service account of the job's workers."
  type        = string
}

variable "subscription" {
  description = "The events subscription the job reads (projects/P/subscriptions/S)."
  type        = string
}

variable "deadletter_topic" {
  description = "The dead-letter topic (projects/P/topics/T)."
  type        = string
}

variable "bq_table" {
  description = "The events table, PROJECT:DATASET.TABLE (or PROJECT.DATASET.TABLE)."
  type        = string
}

variable "weather_provider" {
  description = "Weather provider of the pipeline: open-meteo or openweathermap (skyjoin's --weather-provider names)."
  type        = string
  default     = "open-meteo"
}

variable "weather_url" {
  description = "Base URL of the weather API."
  type        = string
  default     = "https://api.open-meteo.com"
}

variable "weather_api_key" {
  description = "Weather API key as a reference (sm://projects/P/secrets/S/versions/V) or empty: never the key itself, which would show in the job's parameters."
  type        = string
  default     = ""
}

variable "weather_quota" {
  description = "The provider's quota for the whole job, LIMIT/PERIOD,... as skyjoin's --weather-quota (each worker takes LIMIT / max_workers)."
  type        = string
  default     = "600/1m,5000/1h,10000/24h"
}

variable "records_topic" {
  description = "The records topic (projects/P/topics/T) the stored records go to, for live streams and webhooks; empty for none."
  type        = string
  default     = ""
}

variable "pii_key" {
  description = "The PII policy's hash key as a reference (sm://projects/P/secrets/S/versions/V): the worker's, so that hashes join. Required by the default PII policy."
  type        = string
}

variable "max_workers" {
  description = "Most workers."
  type        = number
  default     = 3
}

variable "machine_type" {
  description = "Worker machine type."
  type        = string
  default     = "n2-standard-2"
}

variable "labels" {
  description = "Labels of the job."
  type        = map(string)
  default     = {}
}

resource "google_dataflow_flex_template_job" "this" {
  provider = google-beta

  project                 = var.project
  region                  = var.region
  name                    = var.name
  container_spec_gcs_path = "gs://${var.bucket}/templates/skyjoin-dataflow.json"
  service_account_email   = var.service_account_email
  temp_location           = "gs://${var.bucket}/tmp"
  staging_location        = "gs://${var.bucket}/staging"
  max_workers             = var.max_workers
  machine_type            = var.machine_type
  enable_streaming_engine = true
  # Drain on delete or replace: messages in hand are finished, not dropped.
  on_delete = "drain"
  labels    = merge(var.labels, { app = "skyjoin" })

  parameters = {
    subscription     = var.subscription
    deadletter_topic = var.deadletter_topic
    bq_table         = var.bq_table
    weather_provider = var.weather_provider
    weather_url      = var.weather_url
    weather_api_key  = var.weather_api_key
    weather_quota    = var.weather_quota
    records_topic    = var.records_topic
    pii_key          = var.pii_key
  }
}

output "job_id" {
  description = "The Dataflow job's id."
  value       = google_dataflow_flex_template_job.this.job_id
}
