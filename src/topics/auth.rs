//! STUB until the apps file lands: open mode only.

pub struct Apps;

pub fn parse_apps(_json: &[u8]) -> Result<Apps, String> {
    Err("apps files are not supported yet".into())
}

pub enum Auth {
    Open,
    File(Apps),
}

impl Auth {
    fn open(appid: &[u8]) -> Result<(), &'static str> {
        if appid.is_empty() {
            return Err("auth with empty identity or key");
        }
        if !super::route::valid_name(std::str::from_utf8(appid).unwrap_or(""), 64) {
            return Err("authentication fails");
        }
        Ok(())
    }
    pub fn check_pub(&self, appid: &[u8], _k: &[u8], _topic: &str) -> Result<(), &'static str> {
        Self::open(appid)
    }
    pub fn check_sub(
        &self,
        appid: &[u8],
        _k: &[u8],
        _owner: &str,
        _topic: &str,
        _group: Option<&str>,
    ) -> Result<(), &'static str> {
        Self::open(appid)
    }
    pub fn check_admin(&self, appid: &[u8], _k: &[u8]) -> Result<(), &'static str> {
        Self::open(appid)
    }
}
