variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "location" {
  description = "Repository location (a region, or a multi-region such as europe)."
  type        = string
}

variable "repository_id" {
  description = "Repository id."
  type        = string
  default     = "skyjoin"
}

variable "keep_versions" {
  description = "Tagged or untagged, the most recent image versions kept by the cleanup policy (older ones are deleted; rollback needs the previous ones)."
  type        = number
  default     = 30
}

variable "writers" {
  description = "IAM members that push images (roles/artifactregistry.writer on the repository), by a name known before apply."
  type        = map(string)
  default     = {}
}

resource "google_artifact_registry_repository" "this" {
  project       = var.project
  location      = var.location
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "skyjoin container images"
  labels        = { app = "skyjoin" }

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_versions
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days, unless kept above
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "writer" {
  for_each = var.writers

  project    = var.project
  location   = var.location
  repository = google_artifact_registry_repository.this.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

output "image_base" {
  description = "Where skyjoin images go: LOCATION-docker.pkg.dev/PROJECT/skyjoin/skyjoin."
  value       = "${var.location}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.this.repository_id}/skyjoin"
}

output "repository_id" {
  description = "The repository's id."
  value       = google_artifact_registry_repository.this.repository_id
}
