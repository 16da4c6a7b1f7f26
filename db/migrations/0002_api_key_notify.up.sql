-- API servers cache key lookups; any revocation or deletion of a key tells
-- them at once to drop their caches.
CREATE FUNCTION scrapethis_api_keys_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('scrapethis_api_keys', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_changed
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION scrapethis_api_keys_changed();
