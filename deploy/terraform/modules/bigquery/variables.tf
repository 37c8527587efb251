variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "dataset" {
  description = "Dataset id (the store URL's DATASET: bigquery://PROJECT/DATASET)."
  type        = string
  default     = "skyjoin"
}

variable "location" {
  description = "Dataset location (the store URL's location parameter), e.g. EU, US or a region."
  type        = string
}

variable "table" {
  description = "Table name (the store URL's table parameter); the view is this name plus _latest."
  type        = string
  default     = "events"
}

variable "retention_days" {
  description = "Partition expiration in days (the store URL's retention): a day's partition is deleted this long after the day ends. 0 keeps data forever."
  type        = number
  default     = 400
  validation {
    condition     = var.retention_days >= 0 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days, 0 or more."
  }
}

variable "max_time_travel_hours" {
  description = "Time travel window of the dataset (48-168 hours): erased rows stay readable this long (docs/data.md)."
  type        = number
  default     = 48
}

variable "deletion_protection" {
  description = "Refuse to destroy the table (and its data) with terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels of the dataset and the table."
  type        = map(string)
  default     = {}
}
