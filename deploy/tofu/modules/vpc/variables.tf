variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's address range."
  type        = string
  default     = "10.20.0.0/16"
}

variable "az_count" {
  description = "Availability zones to spread subnets over (RDS and the ALB need at least 2)."
  type        = number
  default     = 2
}

variable "flow_log_group_arn" {
  description = "CloudWatch log group for rejected-traffic flow logs; null turns them off."
  type        = string
  default     = null
}

variable "flow_log_role_arn" {
  description = "IAM role the flow logs write with (when flow_log_group_arn is set)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
