variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "database" {
  description = "Firestore database id (the registry URL's DATABASE: firestore://PROJECT/DATABASE)."
  type        = string
  default     = "(default)"
}

variable "location" {
  description = "Firestore location, e.g. eur3, nam5 or a region."
  type        = string
}

variable "delete_protection" {
  description = "Refuse to delete the database (webhooks and API keys live in it)."
  type        = bool
  default     = true
}

# The shared registry (webhooks, API keys, sessions): native mode, which the
# registry's snapshot listeners need.
resource "google_firestore_database" "this" {
  project                 = var.project
  name                    = var.database
  location_id             = var.location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.delete_protection ? "ABANDON" : "DELETE"
}

output "registry_url" {
  description = "skyjoin's --registry URL."
  value       = var.database == "(default)" ? "firestore://${var.project}" : "firestore://${var.project}/${var.database}"
}
