output "alb_dns_name" {
  description = "Point your DNS name (the certificate's) at this."
  value       = module.alb.dns_name
}

output "ecr_repository_url" {
  description = "docker push here, then tofu apply -var=image_tag=..."
  value       = module.ecr.repository_url
}

output "ecs_cluster_name" {
  value = module.ecs.cluster_name
}

output "ecs_service_name" {
  value = module.ecs.service_name
}

output "log_group_name" {
  value = module.monitoring.log_group_name
}

output "alarm_topic_arn" {
  value = module.monitoring.sns_topic_arn
}
