# tofu test (in modules/skyjoin): the whole environment planned and applied
# against mocked providers, offline, in each worker mode. It catches what
# validate cannot: type errors of conditionals, for_each over values
# unknown before apply, cycles, and wiring (which services, subscriptions
# and grants each mode makes).

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
  # Computed values the provider checks the form of, when other resources
  # take them.
  mock_resource "google_service_account" {
    defaults = {
      email  = "skyjoin-mock@skyjoin-dev.iam.gserviceaccount.com"
      member = "serviceAccount:skyjoin-mock@skyjoin-dev.iam.gserviceaccount.com"
      name   = "projects/skyjoin-dev/serviceAccounts/skyjoin-mock@skyjoin-dev.iam.gserviceaccount.com"
    }
  }
  mock_resource "google_project_iam_custom_role" {
    defaults = {
      name = "projects/skyjoin-dev/roles/skyjoinEphemeralSubscriptions"
    }
  }
  mock_resource "google_iam_workload_identity_pool" {
    defaults = {
      name = "projects/123456789012/locations/global/workloadIdentityPools/github"
    }
  }
}

mock_provider "google-beta" {}

variables {
  project            = "skyjoin-dev"
  env                = "dev"
  region             = "europe-west1"
  image              = "europe-west1-docker.pkg.dev/skyjoin-dev/skyjoin/skyjoin@sha256:0000000000000000000000000000000000000000000000000000000000000000"
  bigquery_location  = "EU"
  firestore_location = "eur3"
  retention_days     = 30
  github_repository  = "skyjoin/skyjoin"
}

run "push" {
  command = apply

  variables {
    worker_mode = "push"
  }

  assert {
    condition     = toset(keys(output.service_urls)) == toset(["ingest", "enrich", "serve", "deliver", "collect"])
    error_message = "push: want the five services"
  }
  assert {
    condition     = output.service_urls["enrich"] == "https://skyjoin-enrich-123456789012.europe-west1.run.app"
    error_message = "the enrich service's URL is not the deterministic one the push subscription posts to"
  }
  assert {
    condition     = contains(keys(module.pubsub.subscription_names), "events-push") && !contains(keys(module.pubsub.subscription_names), "events-enrich")
    error_message = "push: want the push subscription and no pull subscription"
  }
  assert {
    condition     = length(google_service_account.push) == 1 && length(module.dataflow) == 0
    error_message = "push: want the push account and no Dataflow job"
  }
  assert {
    condition     = length(google_pubsub_subscription_iam_member.service) == 3
    error_message = "push: only ingest and serve (deadletter-browse) and deliver (records-deliver) hold a subscription"
  }
  assert {
    condition     = toset(output.secrets) == toset(["skyjoin-pii-key", "skyjoin-webhook-secret-key"])
    error_message = "without weather_api_key: the PII and webhook keys only"
  }
}

run "pull" {
  command = apply

  variables {
    worker_mode     = "pull"
    weather_api_key = true
  }

  assert {
    condition     = contains(keys(module.pubsub.subscription_names), "events-enrich")
    error_message = "pull: want PREFIX-events-enrich"
  }
  assert {
    condition     = length(google_service_account.push) == 0
    error_message = "pull: no push account"
  }
  assert {
    condition     = length(google_pubsub_subscription_iam_member.service) == 4
    error_message = "pull: enrich also holds events-enrich"
  }
  assert {
    condition     = contains(output.secrets, "skyjoin-weather-api-key")
    error_message = "weather_api_key: want its secret"
  }
}

run "dataflow" {
  command = apply

  variables {
    worker_mode = "dataflow"
  }

  assert {
    condition     = !contains(keys(output.service_urls), "enrich")
    error_message = "dataflow: no enrich service"
  }
  assert {
    condition     = length(module.dataflow) == 1 && output.dataflow_bucket == "skyjoin-dev-skyjoin-dataflow"
    error_message = "dataflow: want the job and its bucket"
  }
}
