variable "project" {
  description = "Google Cloud project id of prod."
  type        = string
}

variable "region" {
  description = "Region of the services."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "The image the services are created with (a digest in this project's Artifact Registry; later deploys change it with gcloud run deploy)."
  type        = string
}

variable "github_repository" {
  description = "GitHub repository (OWNER/NAME) whose workflows may deploy to prod."
  type        = string
}

variable "notification_channels" {
  description = "Monitoring notification channels for the alerts."
  type        = list(string)
  default     = []
}

variable "weather_api_key" {
  description = "Use a weather API key from the secret skyjoin-weather-api-key."
  type        = bool
  default     = false
}

variable "collect_url" {
  description = "The users API the collect service polls; empty: none."
  type        = string
  default     = ""
}
