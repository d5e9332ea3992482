DROP TABLE paynet_lease;
DROP TABLE paynet_tokens;
