variable "name" {
  description = "Repository name."
  type        = string
}

variable "force_delete" {
  description = "Allow destroying the repository while it holds images (dev only)."
  type        = bool
  default     = false
}

variable "untagged_expiry_days" {
  description = "Days after which untagged images are deleted."
  type        = number
  default     = 14
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
