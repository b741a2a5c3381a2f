//! Where ECS requests go.
//!
//! Regional endpoints follow the SDKs' endpoint map: `ecs.<region>.aliyuncs.com`,
//! except cn-hangzhou, which the SDKs address as `ecs-cn-hangzhou.aliyuncs.com`.
//! An override (the simulator, a proxy, a VPC endpoint) applies to every region.

use super::transport::ApiHost;
use std::borrow::Cow;

/// The endpoint rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://ecs.<region>.aliyuncs.com`.
    Regional,
    /// One endpoint for every region, parsed once.
    Override(ApiHost),
}

impl Endpoint {
    /// From the `ecs.endpoint` setting (empty = regional). Settings validation
    /// has already checked it is a URL with an allowed scheme.
    pub fn from_setting(value: &str) -> Result<Self, url::ParseError> {
        if value.is_empty() {
            return Ok(Self::Regional);
        }
        ApiHost::parse(value).map(Self::Override)
    }

    /// Where a region's calls go.
    pub fn resolve(&self, region: &str) -> Result<Cow<'_, ApiHost>, url::ParseError> {
        match self {
            Self::Override(api) => Ok(Cow::Borrowed(api)),
            Self::Regional => {
                let host = if region == "cn-hangzhou" {
                    "ecs-cn-hangzhou.aliyuncs.com".to_owned()
                } else {
                    format!("ecs.{region}.aliyuncs.com")
                };
                ApiHost::parse(&format!("https://{host}")).map(Cow::Owned)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(e: &Endpoint, region: &str) -> String {
        e.resolve(region).expect("resolves").host().to_owned()
    }

    fn url(e: &Endpoint, region: &str) -> String {
        e.resolve(region).expect("resolves").url("a=1").to_string()
    }

    #[test]
    fn regional_and_override() {
        let r = Endpoint::Regional;
        assert_eq!(host(&r, "cn-hangzhou"), "ecs-cn-hangzhou.aliyuncs.com");
        assert_eq!(
            url(&r, "cn-hangzhou"),
            "https://ecs-cn-hangzhou.aliyuncs.com/?a=1"
        );
        assert_eq!(host(&r, "cn-beijing"), "ecs.cn-beijing.aliyuncs.com");
        let o = Endpoint::from_setting("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(host(&o, "cn-beijing"), "127.0.0.1:8080");
        assert_eq!(url(&o, "cn-beijing"), "http://127.0.0.1:8080/?a=1");
        let o = Endpoint::from_setting("https://ecs.example.com/some/path").expect("valid");
        assert_eq!(host(&o, "x"), "ecs.example.com");
        assert_eq!(url(&o, "x"), "https://ecs.example.com/?a=1");
        assert_eq!(
            Endpoint::from_setting("").expect("valid"),
            Endpoint::Regional
        );
    }

    #[test]
    fn a_signed_query_is_sent_as_encoded() {
        let o = Endpoint::from_setting("http://127.0.0.1:8080").expect("valid");
        let query = "ClientToken=a%2Fb&RegionId=cn-hangzhou&Signature=x%2B%3D";
        assert_eq!(
            o.resolve("cn-hangzhou")
                .expect("resolves")
                .url(query)
                .query(),
            Some(query)
        );
    }
}
