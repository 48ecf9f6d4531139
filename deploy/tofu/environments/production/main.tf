# production: 2048 CPU units and 4096 MiB per task, 3 task(s), autoscaling on CPU, RDS db.r7g.large (Multi-AZ true),
# Redis cache.r7g.large x 2 with automatic failover, logs kept 90 days, deletion protection true.
# The values of deploy/README.md's environment table are the literal arguments below (a test compares them).
locals {
  name = "workflow-production"
}

module "vpc" {
  source   = "../../modules/vpc"
  name     = local.name
  az_count = 3
}

module "ecr" {
  source       = "../../modules/ecr"
  name         = local.name
  force_delete = false
}

module "alb" {
  source                       = "../../modules/alb"
  name                         = local.name
  vpc_id                       = module.vpc.vpc_id
  vpc_cidr_block               = module.vpc.vpc_cidr_block
  public_subnet_ids            = module.vpc.public_subnet_ids
  certificate_arn              = var.certificate_arn
  deregistration_delay_seconds = var.shutdown_timeout_seconds
  deletion_protection          = true
}

module "monitoring" {
  source                  = "../../modules/monitoring"
  name                    = local.name
  region                  = var.region
  log_retention_days      = 90
  alarm_email             = var.alarm_email
  ecs_cluster_name        = module.ecs.cluster_name
  ecs_service_name        = module.ecs.service_name
  alb_arn_suffix          = module.alb.arn_suffix
  target_group_arn_suffix = module.alb.target_group_arn_suffix
}

module "rds" {
  source                     = "../../modules/rds"
  name                       = local.name
  vpc_id                     = module.vpc.vpc_id
  private_subnet_ids         = module.vpc.private_subnet_ids
  allowed_security_group_ids = [module.ecs.task_security_group_id]
  instance_class             = "db.r7g.large"
  multi_az                   = true
  deletion_protection        = true
}

module "elasticache" {
  source                     = "../../modules/elasticache"
  name                       = local.name
  vpc_id                     = module.vpc.vpc_id
  private_subnet_ids         = module.vpc.private_subnet_ids
  allowed_security_group_ids = [module.ecs.task_security_group_id]
  node_type                  = "cache.r7g.large"
  num_cache_nodes            = 2
  automatic_failover         = true
}

module "ecs" {
  source                   = "../../modules/ecs"
  name                     = local.name
  vpc_id                   = module.vpc.vpc_id
  private_subnet_ids       = module.vpc.private_subnet_ids
  alb_security_group_id    = module.alb.security_group_id
  target_group_arn         = module.alb.target_group_arn
  image_repository         = module.ecr.repository_url
  image_tag                = var.image_tag
  cpu                      = 2048
  memory                   = 4096
  desired_count            = 3
  autoscaling_enabled      = true
  min_capacity             = 3
  max_capacity             = 12
  log_group_name           = module.monitoring.log_group_name
  shutdown_timeout_seconds = var.shutdown_timeout_seconds
  environment = {
    WORKFLOW_DB_HOST    = "${module.rds.address}:${module.rds.port}"
    WORKFLOW_DB_NAME    = module.rds.db_name
    WORKFLOW_DB_USER    = module.rds.username
    WORKFLOW_REDIS_ADDR = module.elasticache.url
  }
  secrets = {
    WORKFLOW_DB_PASSWORD = "${module.rds.master_user_secret_arn}:password::"
    JWT_SECRET           = var.jwt_secret_arn
  }
  secret_arns = [module.rds.master_user_secret_arn, var.jwt_secret_arn]
}
