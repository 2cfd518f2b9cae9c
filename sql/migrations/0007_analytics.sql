-- Personas, social proof, viral growth, dashboards: functions with the seeds' names and
-- shapes, the two materialized views (each with the unique, non-partial index on NOT NULL
-- plain columns that REFRESH ... CONCURRENTLY needs) and the cache_performance view.
--
-- Persona thresholds (average value of the user's confirmed or completed bookings, in the
-- booking currency, SAR for the platform; no conversion between currencies):
--   no such booking         -> 'مسافر_متوسط'    (neutral default for new users)
--   average  <  1500        -> 'مسافر_اقتصادي'
--   1500 <= average < 5000  -> 'مسافر_متوسط'
--   average >= 5000         -> 'باحث_عن_فخامة'

CREATE FUNCTION public.traveler_persona_for(p_avg_booking_value numeric) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
               WHEN p_avg_booking_value IS NULL THEN 'مسافر_متوسط'
               WHEN p_avg_booking_value < 1500 THEN 'مسافر_اقتصادي'
               WHEN p_avg_booking_value < 5000 THEN 'مسافر_متوسط'
               ELSE 'باحث_عن_فخامة'
           END
$$;

COMMENT ON FUNCTION public.traveler_persona_for(numeric) IS
    'Persona for an average booking value: < 1500 economy, < 5000 mid, else luxury; NULL '
    '(no booking) mid.';

-- Invoker rights: as gth_app it sees only the acting user's bookings (row-level security).
CREATE FUNCTION public.calculate_traveler_persona(p_user_id uuid) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT public.traveler_persona_for(avg(b.total_amount))
      FROM public.bookings b
     WHERE b.user_id = p_user_id AND b.status IN ('confirmed', 'completed')
$$;

CREATE MATERIALIZED VIEW public.user_booking_stats AS
SELECT u.id AS user_id,
       count(b.id) AS total_bookings,
       count(b.id) FILTER (WHERE b.status IN ('confirmed', 'completed')) AS paid_bookings,
       coalesce(sum(b.total_amount) FILTER (WHERE b.status IN ('confirmed', 'completed')), 0)
           AS total_spent,
       round(avg(b.total_amount) FILTER (WHERE b.status IN ('confirmed', 'completed')), 2)
           AS avg_booking_value,
       min(b.booked_at) AS first_booking_at,
       max(b.booked_at) AS last_booking_at,
       public.traveler_persona_for(
           avg(b.total_amount) FILTER (WHERE b.status IN ('confirmed', 'completed'))) AS persona
  FROM public.users u
  LEFT JOIN public.bookings b ON b.user_id = u.id
 WHERE u.deleted_at IS NULL
 GROUP BY u.id;
CREATE UNIQUE INDEX user_booking_stats_user_key ON public.user_booking_stats (user_id);
CREATE INDEX user_booking_stats_persona_idx ON public.user_booking_stats (persona);

-- Social proof per hotel and persona, plus one row per hotel with persona_type 'all'.
-- trust_score = (0.5 * (avg_rating - 1) / 4 + 0.25 * rebook_rate + 0.25 * exceeded_rate)
--               * n / (n + 10), n = number of ratings (few ratings, little trust); 0..1.
CREATE MATERIALIZED VIEW public.hotel_social_proof AS
WITH persona AS (
    SELECT b.user_id,
           public.traveler_persona_for(avg(b.total_amount)) AS persona
      FROM public.bookings b
     WHERE b.status IN ('confirmed', 'completed')
     GROUP BY b.user_id
), stays AS (
    SELECT hb.hotel_identifier,
           coalesce(p.persona, public.traveler_persona_for(NULL)) AS persona
      FROM public.hotel_bookings hb
      JOIN public.booking_items bi ON bi.id = hb.booking_item_id
      JOIN public.bookings b ON b.id = bi.booking_id
      LEFT JOIN persona p ON p.user_id = hb.user_id
     WHERE b.status IN ('confirmed', 'completed')
), stay_counts AS (
    SELECT s.hotel_identifier,
           CASE WHEN GROUPING(s.persona) = 1 THEN 'all' ELSE s.persona END AS persona_type,
           count(*) AS total_bookings
      FROM stays s
     GROUP BY GROUPING SETS ((s.hotel_identifier, s.persona), (s.hotel_identifier))
), rated AS (
    SELECT r.hotel_identifier, r.rating, r.would_rebook, r.exceeded_expectations,
           coalesce(p.persona, public.traveler_persona_for(NULL)) AS persona
      FROM public.hotel_ratings r
      LEFT JOIN persona p ON p.user_id = r.user_id
), ratings AS (
    SELECT x.hotel_identifier,
           CASE WHEN GROUPING(x.persona) = 1 THEN 'all' ELSE x.persona END AS persona_type,
           count(*) AS rating_count,
           avg(x.rating) AS avg_rating,
           avg(x.would_rebook::int) AS rebook_rate,
           avg(x.exceeded_expectations::int) AS exceeded_rate
      FROM rated x
     GROUP BY GROUPING SETS ((x.hotel_identifier, x.persona), (x.hotel_identifier))
)
SELECT coalesce(s.hotel_identifier, r.hotel_identifier) AS hotel_identifier,
       coalesce(s.persona_type, r.persona_type) AS persona_type,
       round(r.avg_rating, 2) AS avg_rating,
       coalesce(s.total_bookings, 0) AS total_bookings,
       coalesce(r.rating_count, 0) AS rating_count,
       round(coalesce(r.rebook_rate, 0), 3) AS rebook_rate,
       round(coalesce(r.exceeded_rate, 0), 3) AS exceeded_rate,
       round(coalesce((0.5 * (r.avg_rating - 1) / 4 + 0.25 * r.rebook_rate
                       + 0.25 * r.exceeded_rate) * r.rating_count / (r.rating_count + 10), 0),
             3) AS trust_score
  FROM stay_counts s
  FULL JOIN ratings r ON r.hotel_identifier = s.hotel_identifier
                     AND r.persona_type = s.persona_type;
CREATE UNIQUE INDEX hotel_social_proof_key
    ON public.hotel_social_proof (hotel_identifier, persona_type);

-- The seed's shape: one row (zeros when the hotel has no data yet).
CREATE FUNCTION public.get_hotel_social_proof(p_hotel_identifier text,
                                              p_persona_type text DEFAULT NULL)
    RETURNS TABLE (avg_rating numeric, total_bookings bigint, rebook_rate numeric,
                   exceeded_rate numeric, trust_score numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    IF p_persona_type IS NOT NULL
       AND p_persona_type NOT IN ('مسافر_اقتصادي', 'مسافر_متوسط', 'باحث_عن_فخامة') THEN
        RAISE EXCEPTION 'unknown persona %', p_persona_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT coalesce(h.avg_rating, 0), coalesce(h.total_bookings, 0),
           coalesce(h.rebook_rate, 0), coalesce(h.exceeded_rate, 0), coalesce(h.trust_score, 0)
      FROM (SELECT 1) one
      LEFT JOIN public.hotel_social_proof h
             ON h.hotel_identifier = p_hotel_identifier
            AND h.persona_type = coalesce(p_persona_type, 'all');
END
$$;

-- K-factor: new users a user brought (referrals that signed up or converted, plus
-- conversions from content they shared). With NULL: the platform's K, i.e. all such new
-- users divided by the number of active (not soft-deleted) users. Invoker rights.
CREATE FUNCTION public.calculate_k_factor(p_user_id uuid DEFAULT NULL) RETURNS numeric
    LANGUAGE sql STABLE
    AS $$
    SELECT round(
        ((SELECT count(*) FROM public.referrals r
           WHERE (p_user_id IS NULL OR r.referrer_user_id = p_user_id)
             AND r.status IN ('signed_up', 'converted'))
         + (SELECT coalesce(sum(s.conversion_count), 0) FROM public.shared_content s
             WHERE p_user_id IS NULL OR s.user_id = p_user_id))::numeric
        / CASE WHEN p_user_id IS NOT NULL THEN 1
               ELSE greatest((SELECT count(*) FROM public.users u WHERE u.deleted_at IS NULL), 1)
          END,
        3)
$$;

-- One user's dashboard as JSON (invoker rights: gth_app gets only its own user's data).
CREATE FUNCTION public.get_user_analytics_dashboard(p_user_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'user_id', p_user_id,
        'persona', public.calculate_traveler_persona(p_user_id),
        'total_bookings', (SELECT count(*) FROM public.bookings b WHERE b.user_id = p_user_id),
        'paid_bookings', (SELECT count(*) FROM public.bookings b
                           WHERE b.user_id = p_user_id AND b.status IN ('confirmed', 'completed')),
        'total_spent', (SELECT coalesce(sum(b.total_amount), 0) FROM public.bookings b
                         WHERE b.user_id = p_user_id AND b.status IN ('confirmed', 'completed')),
        'last_booking_at', (SELECT max(b.booked_at) FROM public.bookings b
                             WHERE b.user_id = p_user_id),
        'upcoming_trips', (SELECT count(*) FROM public.trips t
                            WHERE t.user_id = p_user_id AND t.start_date >= current_date
                              AND t.status IN ('planning', 'booked')),
        'top_destinations', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                'destination', d.destination, 'bookings', d.n)
                                             ORDER BY d.n DESC, d.destination), '[]')
                               FROM (SELECT b.destination, count(*) AS n
                                       FROM public.bookings b
                                      WHERE b.user_id = p_user_id AND b.destination IS NOT NULL
                                      GROUP BY b.destination
                                      ORDER BY count(*) DESC, b.destination LIMIT 5) d),
        'chat_sessions', (SELECT count(*) FROM public.chat_sessions c
                           WHERE c.user_id = p_user_id),
        'actions_last_30_days', (SELECT count(*) FROM public.user_behavior_log l
                                  WHERE l.user_id = p_user_id
                                    AND l."timestamp" >= now() - interval '30 days'),
        'referrals_sent', (SELECT count(*) FROM public.referrals r
                            WHERE r.referrer_user_id = p_user_id),
        'k_factor', public.calculate_k_factor(p_user_id),
        'predictions', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                           'destination', p.predicted_destination,
                                           'confidence', p.confidence_level)
                                        ORDER BY p.confidence_level DESC), '[]')
                          FROM (SELECT * FROM public.trip_predictions tp
                                 WHERE tp.user_id = p_user_id AND tp.status = 'active'
                                 ORDER BY tp.confidence_level DESC LIMIT 3) p))
$$;

CREATE VIEW public.cache_performance AS
SELECT c.cache_name,
       c.total_entries,
       c.live_entries,
       c.expired_entries,
       c.total_hits,
       round(c.total_hits::numeric / nullif(c.total_hits + c.total_entries, 0), 3) AS hit_rate,
       round(c.reused_entries::numeric / nullif(c.total_entries, 0), 3) AS reuse_rate,
       c.oldest_entry_at,
       c.last_hit_at,
       pg_total_relation_size(c.rel) AS total_bytes,
       pg_size_pretty(pg_total_relation_size(c.rel)) AS total_size
  FROM (SELECT 'flight_search_cache'::text AS cache_name,
               'public.flight_search_cache'::regclass AS rel,
               count(*) AS total_entries,
               count(*) FILTER (WHERE expires_at > now()) AS live_entries,
               count(*) FILTER (WHERE expires_at <= now()) AS expired_entries,
               coalesce(sum(hit_count), 0) AS total_hits,
               count(*) FILTER (WHERE hit_count > 0) AS reused_entries,
               min(created_at) AS oldest_entry_at,
               max(last_hit_at) AS last_hit_at
          FROM public.flight_search_cache
        UNION ALL
        SELECT 'hotel_search_cache', 'public.hotel_search_cache'::regclass, count(*),
               count(*) FILTER (WHERE expires_at > now()),
               count(*) FILTER (WHERE expires_at <= now()),
               coalesce(sum(hit_count), 0),
               count(*) FILTER (WHERE hit_count > 0),
               min(created_at), max(last_hit_at)
          FROM public.hotel_search_cache) c;

COMMENT ON VIEW public.cache_performance IS
    'Per search cache: entries (live / expired), hits, hit_rate = hits / (hits + entries, '
    'each entry being the miss that filled it), reuse_rate = share of entries hit at least '
    'once, size on disk.';

-- REFRESH for the daemon (which does not own the views): only these two views.
CREATE FUNCTION public.refresh_materialized_view(p_view regclass,
                                                 p_concurrently boolean DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_populated boolean;
BEGIN
    IF p_view NOT IN ('public.user_booking_stats'::regclass,
                      'public.hotel_social_proof'::regclass) THEN
        RAISE EXCEPTION 'refresh_materialized_view: % is not a refreshable view', p_view
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT c.relispopulated INTO v_populated FROM pg_class c WHERE c.oid = p_view;
    IF p_concurrently AND v_populated THEN
        EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %s', p_view);
    ELSE
        EXECUTE format('REFRESH MATERIALIZED VIEW %s', p_view);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION public.refresh_materialized_view(regclass, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.refresh_materialized_view(regclass, boolean)
    TO gth_maint, gth_admin;

-- Per-user statistics are personal: admins (and the refresh function) only. Social proof
-- and the cache statistics are public.
REVOKE ALL ON public.user_booking_stats FROM PUBLIC;
GRANT SELECT ON public.user_booking_stats TO gth_admin;
GRANT SELECT ON public.hotel_social_proof TO gth_app, gth_readonly, gth_admin, gth_maint;
GRANT SELECT ON public.cache_performance TO gth_admin, gth_readonly, gth_maint;
