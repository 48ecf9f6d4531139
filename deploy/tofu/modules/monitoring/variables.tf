variable "name" {
  description = "Name prefix of the log group, topic, alarms and dashboard."
  type        = string
}

variable "region" {
  description = "AWS region, for the dashboard's widgets."
  type        = string
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the service's logs."
  type        = number
}

variable "kms_key_arn" {
  description = "KMS key for the log group; null uses CloudWatch's own encryption."
  type        = string
  default     = null
}

variable "alarm_email" {
  description = "Address the SNS topic mails alarms to."
  type        = string
}

variable "ecs_cluster_name" {
  description = "ECS cluster of the service."
  type        = string
}

variable "ecs_service_name" {
  description = "ECS service watched for CPU and memory."
  type        = string
}

variable "alb_arn_suffix" {
  description = "The load balancer's CloudWatch dimension (arn_suffix)."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "The target group's CloudWatch dimension (arn_suffix)."
  type        = string
}

variable "cpu_threshold_percent" {
  description = "ECS CPU alarm threshold."
  type        = number
  default     = 80
}

variable "memory_threshold_percent" {
  description = "ECS memory alarm threshold."
  type        = number
  default     = 85
}

variable "alb_5xx_threshold" {
  description = "5xx answers a minute (target plus load balancer) above which the alarm fires."
  type        = number
  default     = 10
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
