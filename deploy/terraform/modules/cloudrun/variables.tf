variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "name" {
  description = "Service name, e.g. skyjoin-ingest."
  type        = string
}

variable "image" {
  description = "Container image (Artifact Registry, by digest). Deployments change it with gcloud run deploy (the delivery pipeline); Terraform sets it only when the service is created."
  type        = string
}

variable "args" {
  description = "The skyjoin command and its flags, e.g. [\"enrich\", \"--serve=false\"]."
  type        = list(string)
}

variable "env" {
  description = "Plain environment variables (SKYJOIN_* flags)."
  type        = map(string)
  default     = {}
}

variable "service_account_email" {
  description = "The service's own service account."
  type        = string
}

variable "instance_billing" {
  description = "Instance-based billing (CPU always allocated, --no-cpu-throttling): needed by anything that works between requests (pull, live streams, webhook retries)."
  type        = bool
}

variable "min_instances" {
  description = "Least number of instances (keep 1 or more with instance-based billing)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Most instances."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 80
}

variable "cpu" {
  description = "vCPUs of an instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory of an instance."
  type        = string
  default     = "512Mi"
}

variable "request_timeout" {
  description = "Longest request (the live stream is one long request: up to 3600s)."
  type        = string
  default     = "300s"
}

variable "public" {
  description = "Let anyone reach the service (roles/run.invoker for allUsers): skyjoin checks API keys and ID tokens itself. Off, only the invokers can."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "IAM members given roles/run.invoker on the service (e.g. the push subscription's service account), by a name known before apply."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse to destroy the service with terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels of the service."
  type        = map(string)
  default     = {}
}
