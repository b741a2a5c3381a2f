//! Where ECS requests go.
//!
//! Regional endpoints follow the SDKs' endpoint map: `ecs.<region>.aliyuncs.com`,
//! except cn-hangzhou, which the SDKs address as `ecs-cn-hangzhou.aliyuncs.com`.
//! An override (the simulator, a proxy, a VPC endpoint) applies to every region.

/// The endpoint rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://ecs.<region>.aliyuncs.com`.
    Regional,
    /// One base URL for every region (scheme included, no trailing slash).
    Override {
        /// e.g. `http://127.0.0.1:8080`.
        base: String,
        /// The Host header value (`host[:port]`), which is signed.
        host: String,
    },
}

impl Endpoint {
    /// From the `ecs.endpoint` setting (empty = regional). Settings validation
    /// has already checked it is a URL with an allowed scheme.
    pub fn from_setting(value: &str) -> Result<Self, url::ParseError> {
        if value.is_empty() {
            return Ok(Self::Regional);
        }
        let url = url::Url::parse(value)?;
        let host_name = url.host_str().ok_or(url::ParseError::EmptyHost)?;
        let host = match url.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_owned(),
        };
        let base = format!("{}://{host}", url.scheme());
        Ok(Self::Override { base, host })
    }

    /// Base URL and Host header for a region.
    pub fn resolve(&self, region: &str) -> (String, String) {
        match self {
            Self::Override { base, host } => (base.clone(), host.clone()),
            Self::Regional => {
                let host = if region == "cn-hangzhou" {
                    "ecs-cn-hangzhou.aliyuncs.com".to_owned()
                } else {
                    format!("ecs.{region}.aliyuncs.com")
                };
                (format!("https://{host}"), host)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_and_override() {
        let r = Endpoint::Regional;
        assert_eq!(
            r.resolve("cn-hangzhou"),
            (
                "https://ecs-cn-hangzhou.aliyuncs.com".into(),
                "ecs-cn-hangzhou.aliyuncs.com".into()
            )
        );
        assert_eq!(
            r.resolve("cn-beijing").1,
            "ecs.cn-beijing.aliyuncs.com".to_owned()
        );
        let o = Endpoint::from_setting("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(
            o.resolve("cn-beijing"),
            ("http://127.0.0.1:8080".into(), "127.0.0.1:8080".into())
        );
        let o = Endpoint::from_setting("https://ecs.example.com").expect("valid");
        assert_eq!(o.resolve("x").1, "ecs.example.com");
        assert_eq!(
            Endpoint::from_setting("").expect("valid"),
            Endpoint::Regional
        );
    }
}
