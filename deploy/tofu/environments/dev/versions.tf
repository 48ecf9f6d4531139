terraform {
  required_version = ">= 1.6.0"

  # Local state; copy the production backend block to share it within a team.

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "workflow-server"
      Environment = "dev"
      ManagedBy   = "opentofu"
    }
  }
}
