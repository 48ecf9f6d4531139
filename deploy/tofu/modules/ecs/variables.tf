variable "name" {
  description = "Cluster, service and task family name."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks (no public IPs)."
  type        = list(string)
}

variable "alb_security_group_id" {
  description = "The load balancer's security group: the only source admitted on 8080."
  type        = string
}

variable "target_group_arn" {
  description = "The load balancer's target group for the main listener."
  type        = string
}

variable "image_repository" {
  description = "Image repository URL (the ECR module's output)."
  type        = string
}

variable "image_tag" {
  description = "Image tag to run."
  type        = string
}

variable "config_path" {
  description = "The workflow config file inside the image."
  type        = string
  default     = "/app/example/order-processing-pipeline.yaml"
}

variable "cpu" {
  description = "Task CPU units (256 = 0.25 vCPU)."
  type        = number
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64."
  type        = string
  default     = "X86_64"
}

variable "desired_count" {
  description = "Tasks to run (the starting count when autoscaling is on)."
  type        = number
}

variable "autoscaling_enabled" {
  description = "Scale the service on average CPU."
  type        = bool
  default     = false
}

variable "min_capacity" {
  description = "Fewest tasks when autoscaling."
  type        = number
  default     = 1
}

variable "max_capacity" {
  description = "Most tasks when autoscaling."
  type        = number
  default     = 4
}

variable "cpu_target_percent" {
  description = "Average CPU the autoscaler aims for."
  type        = number
  default     = 60
}

variable "environment" {
  description = "Plain environment variables of the container."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Environment variables read from Secrets Manager or SSM: name => valueFrom ARN (optionally :json-key::)."
  type        = map(string)
  default     = {}
}

variable "secret_arns" {
  description = "The secret or parameter ARNs the execution role may read (the secrets' ARNs without key suffixes)."
  type        = list(string)
  default     = []
}

variable "log_group_name" {
  description = "CloudWatch log group for the container's output."
  type        = string
}

variable "shutdown_timeout_seconds" {
  description = "WORKFLOW_SHUTDOWN_TIMEOUT; the container's stopTimeout adds a margin."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
