variable "region" {
  description = "AWS region (the ACM certificate must be in it)."
  type        = string
  default     = "us-east-1"
}

variable "image_tag" {
  description = "Image tag to deploy: tofu apply -var=\"image_tag=v0.5.1\"."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the load balancer's HTTPS listener."
  type        = string
}

variable "alarm_email" {
  description = "Where CloudWatch alarms are mailed (confirm the SNS subscription once)."
  type        = string
}

variable "jwt_secret_arn" {
  description = "Secrets Manager secret (or SSM SecureString parameter) holding JWT_SECRET, at least 32 bytes."
  type        = string
}

variable "shutdown_timeout_seconds" {
  description = "WORKFLOW_SHUTDOWN_TIMEOUT; the target group's deregistration delay is the same."
  type        = number
  default     = 30
}
