pub mod audit;
pub mod check_config;
pub mod clients;
pub mod keys;
pub mod secrets;
pub mod serve;
pub mod stdio;
