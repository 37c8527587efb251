# Workload Identity Federation for GitHub Actions: the delivery workflow
# exchanges its OIDC token for the deployer service account's, with no key.

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "github_repository" {
  description = "The GitHub repository allowed to deploy, OWNER/NAME."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be OWNER/NAME."
  }
}

variable "github_environment" {
  description = "If set, only workflow jobs running in this GitHub environment (e.g. prod, behind its required reviewers) may deploy here."
  type        = string
  default     = ""
}

variable "pool_id" {
  description = "Workload identity pool id."
  type        = string
  default     = "github"
}

variable "deployer_account_id" {
  description = "Account id of the deployer service account."
  type        = string
  default     = "skyjoin-deployer"
}

variable "deployer_project_roles" {
  description = "Roles of the deployer on the project: deploy Cloud Run revisions and move traffic, start Dataflow jobs."
  type        = list(string)
  default = [
    "roles/run.developer",
    "roles/dataflow.developer",
  ]
}

variable "runtime_service_accounts" {
  description = "The service accounts the deployed services and jobs run as, by a name known before apply (their emails may not be): the deployer may act as them (roles/iam.serviceAccountUser on each)."
  type        = map(string)
  default     = {}
}

locals {
  condition = join(" && ", compact([
    "assertion.repository == '${var.github_repository}'",
    var.github_environment == "" ? "" : "assertion.environment == '${var.github_environment}'",
  ]))
}

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project
  workload_identity_pool_id = var.pool_id
  display_name              = "GitHub Actions"
  description               = "skyjoin's delivery workflows"
}

resource "google_iam_workload_identity_pool_provider" "github" {
  project                            = var.project
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"        = "assertion.sub"
    "attribute.repository"  = "assertion.repository"
    "attribute.ref"         = "assertion.ref"
    "attribute.environment" = "assertion.environment"
  }
  # Tokens of any other repository are refused at the exchange.
  attribute_condition = local.condition

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "deployer" {
  project      = var.project
  account_id   = var.deployer_account_id
  display_name = "skyjoin deployer (GitHub Actions)"
}

resource "google_service_account_iam_member" "workload_identity_user" {
  service_account_id = google_service_account.deployer.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

resource "google_project_iam_member" "deployer" {
  for_each = toset(var.deployer_project_roles)

  project = var.project
  role    = each.value
  member  = google_service_account.deployer.member
}

resource "google_service_account_iam_member" "act_as" {
  for_each = var.runtime_service_accounts

  service_account_id = "projects/${var.project}/serviceAccounts/${each.value}"
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}

output "provider_name" {
  description = "The provider's resource name, for google-github-actions/auth's workload_identity_provider."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "deployer_email" {
  description = "The deployer service account, for google-github-actions/auth's service_account."
  value       = google_service_account.deployer.email
}

output "deployer_member" {
  description = "The deployer as an IAM member."
  value       = google_service_account.deployer.member
}
