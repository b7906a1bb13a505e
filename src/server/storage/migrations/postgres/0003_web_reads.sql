-- The web UI's reads: sessions listed by start, and full-text search over the readable fields of
-- each line (prompts, answers, reasoning, tool arguments and results, messages), not JSON keys
-- or base64 blobs. Lines are stored as bytes; a line that is not UTF-8 or not JSON is indexed
-- as lossy text, never an error (an index expression that raised would refuse the insert).
CREATE INDEX sessions_by_first_seen ON sessions (first_seen);
CREATE FUNCTION kcap_search_text(line BYTEA) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t TEXT;
    j JSONB;
BEGIN
    BEGIN
        t := convert_from(line, 'UTF8');
    EXCEPTION WHEN others THEN
        RETURN '';
    END;
    BEGIN
        j := t::jsonb;
    EXCEPTION WHEN others THEN
        RETURN left(t, 131072);
    END;
    RETURN left(concat_ws(E'\n',
        j #>> '{data,content}', j #>> '{data,reasoningText}', j #>> '{data,message}',
        j #>> '{data,summary}', j #>> '{data,toolName}', j #>> '{data,agentName}',
        j #>> '{data,arguments}', j #>> '{data,result}', j #>> '{data,error}'), 131072);
END
$$;
CREATE INDEX lines_search ON lines USING gin (to_tsvector('simple', kcap_search_text(text)))
    WHERE NOT blank;
