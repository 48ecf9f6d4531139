terraform {
  required_version = ">= 1.6.0"

  # Shared state with locking (deploy/README.md shows how to create the bucket and the table once).
  backend "s3" {
    bucket         = "workflow-tofu-state"
    key            = "production/terraform.tfstate"
    region         = "us-east-1"
    dynamodb_table = "workflow-tofu-locks"
    encrypt        = true
  }

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
      Environment = "production"
      ManagedBy   = "opentofu"
    }
  }
}
