output "primary_endpoint_address" {
  value = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  value = aws_elasticache_replication_group.this.port
}

# What WORKFLOW_REDIS_ADDR takes: TLS, since transit encryption is on.
output "url" {
  value = "rediss://${aws_elasticache_replication_group.this.primary_endpoint_address}:${aws_elasticache_replication_group.this.port}"
}

output "security_group_id" {
  value = aws_security_group.redis.id
}
