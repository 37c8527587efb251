terraform {
  required_version = ">= 1.6"
  required_providers {
    # google_dataflow_flex_template_job exists only in google-beta.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 7.0, < 8.0"
    }
  }
}
