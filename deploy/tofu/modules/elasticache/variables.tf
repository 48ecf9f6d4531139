variable "name" {
  description = "Replication group id and name prefix (40 characters at most)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups admitted on 6379 (the ECS tasks')."
  type        = list(string)
}

variable "node_type" {
  description = "Node type, e.g. cache.t3.micro."
  type        = string
}

variable "num_cache_nodes" {
  description = "Nodes in the group: a primary plus replicas."
  type        = number
}

variable "automatic_failover" {
  description = "Promote a replica when the primary fails (needs two nodes or more); also turns Multi-AZ on."
  type        = bool
}

variable "engine_version" {
  description = "Redis version."
  type        = string
  default     = "7.1"
}

variable "auth_token" {
  description = "Redis AUTH token (16 to 128 characters); null for none."
  type        = string
  default     = null
  sensitive   = true
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots."
  type        = number
  default     = 1
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
