"""Operations: metrics, health, the audit trail, the stats chart, logging, and the operators' HTTP endpoints."""
