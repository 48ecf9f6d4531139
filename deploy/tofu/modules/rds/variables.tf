variable "name" {
  description = "Instance identifier and name prefix."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in at least two availability zones."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups admitted on 5432 (the ECS tasks')."
  type        = list(string)
}

variable "instance_class" {
  description = "Instance class, e.g. db.t3.micro."
  type        = string
}

variable "multi_az" {
  description = "A standby in a second availability zone."
  type        = bool
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (and take a final snapshot when it is deleted anyway)."
  type        = bool
}

variable "engine_version" {
  description = "PostgreSQL version."
  type        = string
  default     = "16.4"
}

variable "allocated_storage" {
  description = "Storage in GiB (autoscaling up to five times this)."
  type        = number
  default     = 20
}

variable "db_name" {
  description = "Database name."
  type        = string
  default     = "workflow"
}

variable "username" {
  description = "Master user name."
  type        = string
  default     = "workflow"
}

variable "backup_retention_days" {
  description = "Days of automated backups."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
