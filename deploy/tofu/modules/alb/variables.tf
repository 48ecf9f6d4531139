variable "name" {
  description = "Name of the load balancer (32 characters at most)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range: the load balancer may reach the tasks inside it only."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets, at least two availability zones."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener, in the same region."
  type        = string
}

variable "target_port" {
  description = "The server's main listener."
  type        = number
  default     = 8080
}

variable "deregistration_delay_seconds" {
  description = "Seconds a leaving target keeps its connections: match the server's shutdown timeout."
  type        = number
  default     = 30
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer."
  type        = bool
  default     = false
}

variable "access_logs_bucket" {
  description = "S3 bucket for access logs; null turns them off."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
