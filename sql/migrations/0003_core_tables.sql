-- Core application tables: users and consent, OAuth, trips, chat sessions, bookings and
-- their items, hotel ratings, search caches, crypto payments, predictions, referrals and
-- shared content. UUID keys, timestamptz (UTC) everywhere, every constraint named.
-- Every child row carries user_id (row-level security filters on it); composite foreign
-- keys (parent id, user_id) keep it consistent with the parent's owner.

CREATE TABLE public.users (
    id                          uuid        NOT NULL DEFAULT gen_random_uuid(),
    email                       text        NOT NULL,
    full_name                   text,
    phone                       text,
    locale                      text        NOT NULL DEFAULT 'ar',
    preferred_currency          text        NOT NULL DEFAULT 'SAR',
    home_city                   text,
    marketing_consent           boolean     NOT NULL DEFAULT false,
    marketing_consent_at        timestamptz,
    data_processing_consent     boolean     NOT NULL DEFAULT false,
    data_processing_consent_at  timestamptz,
    analytics_consent           boolean     NOT NULL DEFAULT false,
    analytics_consent_at        timestamptz,
    last_login_at               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_format_check CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
    CONSTRAINT users_phone_format_check CHECK (phone ~ '^\+?[0-9][0-9 ()-]{5,19}$'),
    CONSTRAINT users_locale_check CHECK (locale ~ '^[a-z]{2}(-[A-Z]{2})?$'),
    CONSTRAINT users_currency_check CHECK (preferred_currency ~ '^[A-Z]{3}$'),
    CONSTRAINT users_marketing_consent_at_check
        CHECK (NOT marketing_consent OR marketing_consent_at IS NOT NULL),
    CONSTRAINT users_data_processing_consent_at_check
        CHECK (NOT data_processing_consent OR data_processing_consent_at IS NOT NULL),
    CONSTRAINT users_analytics_consent_at_check
        CHECK (NOT analytics_consent OR analytics_consent_at IS NOT NULL),
    CONSTRAINT users_deleted_after_created_check CHECK (deleted_at >= created_at)
);
CREATE UNIQUE INDEX users_email_lower_key ON public.users (lower(email));
CREATE INDEX users_deleted_at_idx ON public.users (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON public.users
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
COMMENT ON COLUMN public.users.deleted_at IS
    'Soft delete: the GDPR job erases the user once the grace period (30 days) has passed.';

-- Every consent decision, append-only (GDPR art. 7(1): the controller must prove consent).
CREATE TABLE public.user_consent_history (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL,
    consent_type text        NOT NULL,
    granted      boolean     NOT NULL,
    source       text        NOT NULL DEFAULT 'app',
    details      jsonb,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_consent_history_pkey PRIMARY KEY (id),
    CONSTRAINT user_consent_history_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT user_consent_history_type_check
        CHECK (consent_type IN ('marketing', 'data_processing', 'analytics', 'cookies', 'terms')),
    CONSTRAINT user_consent_history_source_check
        CHECK (source IN ('app', 'web', 'support', 'import', 'system'))
);
CREATE INDEX user_consent_history_user_idx ON public.user_consent_history (user_id, recorded_at);
CREATE INDEX user_consent_history_details_gin ON public.user_consent_history USING gin (details);

-- Consent flags changed on users are recorded in the history automatically.
CREATE FUNCTION public.record_consent_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.marketing_consent IS DISTINCT FROM OLD.marketing_consent THEN
        INSERT INTO public.user_consent_history (user_id, consent_type, granted, source)
        VALUES (NEW.id, 'marketing', NEW.marketing_consent, 'system');
    END IF;
    IF TG_OP = 'INSERT'
       OR NEW.data_processing_consent IS DISTINCT FROM OLD.data_processing_consent THEN
        INSERT INTO public.user_consent_history (user_id, consent_type, granted, source)
        VALUES (NEW.id, 'data_processing', NEW.data_processing_consent, 'system');
    END IF;
    IF TG_OP = 'INSERT' OR NEW.analytics_consent IS DISTINCT FROM OLD.analytics_consent THEN
        INSERT INTO public.user_consent_history (user_id, consent_type, granted, source)
        VALUES (NEW.id, 'analytics', NEW.analytics_consent, 'system');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_record_consent AFTER INSERT OR UPDATE ON public.users
    FOR EACH ROW EXECUTE FUNCTION public.record_consent_change();

CREATE TABLE public.oauth_accounts (
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id             uuid        NOT NULL,
    provider            text        NOT NULL,
    provider_account_id text        NOT NULL,
    provider_email      text,
    access_token        text,
    refresh_token       text,
    id_token            text,
    token_expires_at    timestamptz,
    scope               text,
    profile             jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT oauth_accounts_pkey PRIMARY KEY (id),
    CONSTRAINT oauth_accounts_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT oauth_accounts_provider_account_key UNIQUE (provider, provider_account_id),
    CONSTRAINT oauth_accounts_provider_check
        CHECK (provider IN ('google', 'apple', 'facebook', 'microsoft', 'github', 'twitter',
                            'telegram'))
);
CREATE INDEX oauth_accounts_user_idx ON public.oauth_accounts (user_id);
CREATE INDEX oauth_accounts_profile_gin ON public.oauth_accounts USING gin (profile);
CREATE TRIGGER oauth_accounts_set_updated_at BEFORE UPDATE ON public.oauth_accounts
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

CREATE TABLE public.trips (
    id              uuid          NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid          NOT NULL,
    title           text          NOT NULL,
    origin          text,
    destination     text          NOT NULL,
    start_date      date,
    end_date        date,
    budget          numeric(12,2),
    currency        text          NOT NULL DEFAULT 'SAR',
    travelers_count integer       NOT NULL DEFAULT 1,
    status          text          NOT NULL DEFAULT 'planning',
    preferences     jsonb,
    itinerary       jsonb,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT trips_pkey PRIMARY KEY (id),
    CONSTRAINT trips_id_user_key UNIQUE (id, user_id),
    CONSTRAINT trips_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT trips_dates_check CHECK (end_date > start_date),
    CONSTRAINT trips_budget_check CHECK (budget > 0),
    CONSTRAINT trips_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT trips_travelers_count_check CHECK (travelers_count > 0),
    CONSTRAINT trips_status_check
        CHECK (status IN ('planning', 'booked', 'in_progress', 'completed', 'cancelled'))
);
CREATE INDEX trips_user_idx ON public.trips (user_id, start_date);
CREATE INDEX trips_preferences_gin ON public.trips USING gin (preferences);
CREATE INDEX trips_itinerary_gin ON public.trips USING gin (itinerary);
CREATE TRIGGER trips_set_updated_at BEFORE UPDATE ON public.trips
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- LangGraph conversations: thread_id is the checkpointer's thread, checkpoint_ns its namespace.
CREATE TABLE public.chat_sessions (
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL,
    trip_id         uuid,
    thread_id       text        NOT NULL,
    checkpoint_ns   text        NOT NULL DEFAULT '',
    title           text,
    status          text        NOT NULL DEFAULT 'active',
    metadata        jsonb,
    last_message_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_sessions_pkey PRIMARY KEY (id),
    CONSTRAINT chat_sessions_thread_id_key UNIQUE (thread_id),
    CONSTRAINT chat_sessions_id_user_key UNIQUE (id, user_id),
    CONSTRAINT chat_sessions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT chat_sessions_trip_fkey FOREIGN KEY (trip_id, user_id)
        REFERENCES public.trips (id, user_id) ON DELETE CASCADE,
    CONSTRAINT chat_sessions_status_check CHECK (status IN ('active', 'archived', 'closed')),
    CONSTRAINT chat_sessions_thread_id_check CHECK (length(thread_id) > 0)
);
CREATE INDEX chat_sessions_user_idx ON public.chat_sessions (user_id, created_at);
CREATE INDEX chat_sessions_trip_idx ON public.chat_sessions (trip_id, user_id);
CREATE INDEX chat_sessions_metadata_gin ON public.chat_sessions USING gin (metadata);
CREATE TRIGGER chat_sessions_set_updated_at BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

CREATE TABLE public.bookings (
    id                uuid          NOT NULL DEFAULT gen_random_uuid(),
    user_id           uuid          NOT NULL,
    trip_id           uuid,
    booking_reference text          NOT NULL,
    booking_type      text          NOT NULL,
    status            text          NOT NULL DEFAULT 'pending',
    total_amount      numeric(12,2) NOT NULL,
    currency          text          NOT NULL DEFAULT 'SAR',
    destination       text,
    start_date        date,
    end_date          date,
    metadata          jsonb,
    booked_at         timestamptz   NOT NULL DEFAULT now(),
    cancelled_at      timestamptz,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    updated_at        timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT bookings_pkey PRIMARY KEY (id),
    CONSTRAINT bookings_reference_key UNIQUE (booking_reference),
    CONSTRAINT bookings_id_user_key UNIQUE (id, user_id),
    CONSTRAINT bookings_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT bookings_trip_fkey FOREIGN KEY (trip_id, user_id)
        REFERENCES public.trips (id, user_id) ON DELETE CASCADE,
    CONSTRAINT bookings_type_check
        CHECK (booking_type IN ('flight', 'hotel', 'package', 'activity')),
    CONSTRAINT bookings_status_check
        CHECK (status IN ('pending', 'confirmed', 'cancelled', 'completed', 'refunded')),
    CONSTRAINT bookings_total_amount_check CHECK (total_amount > 0),
    CONSTRAINT bookings_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT bookings_dates_check CHECK (end_date > start_date),
    CONSTRAINT bookings_cancelled_after_booked_check CHECK (cancelled_at >= booked_at)
);
CREATE INDEX bookings_user_idx ON public.bookings (user_id, booked_at);
CREATE INDEX bookings_trip_idx ON public.bookings (trip_id, user_id);
CREATE INDEX bookings_booked_at_idx ON public.bookings (booked_at);
CREATE INDEX bookings_metadata_gin ON public.bookings USING gin (metadata);
CREATE TRIGGER bookings_set_updated_at BEFORE UPDATE ON public.bookings
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

CREATE TABLE public.booking_items (
    id          uuid          NOT NULL DEFAULT gen_random_uuid(),
    booking_id  uuid          NOT NULL,
    user_id     uuid          NOT NULL,
    item_type   text          NOT NULL,
    description text,
    quantity    integer       NOT NULL DEFAULT 1,
    unit_price  numeric(12,2) NOT NULL,
    total_price numeric(12,2) NOT NULL,
    currency    text          NOT NULL DEFAULT 'SAR',
    status      text          NOT NULL DEFAULT 'pending',
    details     jsonb,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT booking_items_pkey PRIMARY KEY (id),
    CONSTRAINT booking_items_id_user_key UNIQUE (id, user_id),
    CONSTRAINT booking_items_booking_fkey FOREIGN KEY (booking_id, user_id)
        REFERENCES public.bookings (id, user_id) ON DELETE CASCADE,
    CONSTRAINT booking_items_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT booking_items_type_check
        CHECK (item_type IN ('flight', 'hotel', 'activity', 'transfer', 'insurance')),
    CONSTRAINT booking_items_quantity_check CHECK (quantity > 0),
    CONSTRAINT booking_items_unit_price_check CHECK (unit_price > 0),
    CONSTRAINT booking_items_total_price_check CHECK (total_price > 0),
    CONSTRAINT booking_items_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT booking_items_status_check
        CHECK (status IN ('pending', 'confirmed', 'cancelled', 'completed', 'refunded'))
);
CREATE INDEX booking_items_booking_idx ON public.booking_items (booking_id, user_id);
CREATE INDEX booking_items_user_idx ON public.booking_items (user_id);
CREATE INDEX booking_items_details_gin ON public.booking_items USING gin (details);
CREATE TRIGGER booking_items_set_updated_at BEFORE UPDATE ON public.booking_items
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

CREATE TABLE public.flight_bookings (
    id                  uuid          NOT NULL DEFAULT gen_random_uuid(),
    booking_item_id     uuid          NOT NULL,
    user_id             uuid          NOT NULL,
    airline_code        text          NOT NULL,
    flight_number       text          NOT NULL,
    origin_airport      text          NOT NULL,
    destination_airport text          NOT NULL,
    departure_at        timestamptz   NOT NULL,
    arrival_at          timestamptz   NOT NULL,
    cabin_class         text          NOT NULL DEFAULT 'economy',
    passenger_count     integer       NOT NULL DEFAULT 1,
    pnr                 text,
    price               numeric(12,2) NOT NULL,
    currency            text          NOT NULL DEFAULT 'SAR',
    passenger_details   jsonb,
    created_at          timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT flight_bookings_pkey PRIMARY KEY (id),
    CONSTRAINT flight_bookings_item_fkey FOREIGN KEY (booking_item_id, user_id)
        REFERENCES public.booking_items (id, user_id) ON DELETE CASCADE,
    CONSTRAINT flight_bookings_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT flight_bookings_airline_code_check CHECK (airline_code ~ '^[A-Z0-9]{2}$'),
    CONSTRAINT flight_bookings_origin_check CHECK (origin_airport ~ '^[A-Z]{3}$'),
    CONSTRAINT flight_bookings_destination_check CHECK (destination_airport ~ '^[A-Z]{3}$'),
    CONSTRAINT flight_bookings_route_check CHECK (origin_airport <> destination_airport),
    CONSTRAINT flight_bookings_times_check CHECK (arrival_at > departure_at),
    CONSTRAINT flight_bookings_cabin_class_check
        CHECK (cabin_class IN ('economy', 'premium_economy', 'business', 'first')),
    CONSTRAINT flight_bookings_passenger_count_check CHECK (passenger_count > 0),
    CONSTRAINT flight_bookings_price_check CHECK (price > 0),
    CONSTRAINT flight_bookings_currency_check CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE INDEX flight_bookings_item_idx ON public.flight_bookings (booking_item_id, user_id);
CREATE INDEX flight_bookings_user_idx ON public.flight_bookings (user_id);
CREATE INDEX flight_bookings_passenger_details_gin
    ON public.flight_bookings USING gin (passenger_details);

CREATE TABLE public.hotel_bookings (
    id               uuid          NOT NULL DEFAULT gen_random_uuid(),
    booking_item_id  uuid          NOT NULL,
    user_id          uuid          NOT NULL,
    hotel_identifier text          NOT NULL,
    hotel_name       text          NOT NULL,
    city             text          NOT NULL,
    country_code     text,
    star_rating      numeric(2,1),
    check_in         date          NOT NULL,
    check_out        date          NOT NULL,
    rooms            integer       NOT NULL DEFAULT 1,
    guests           integer       NOT NULL DEFAULT 1,
    room_type        text,
    price_per_night  numeric(12,2) NOT NULL,
    total_price      numeric(12,2) NOT NULL,
    currency         text          NOT NULL DEFAULT 'SAR',
    details          jsonb,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT hotel_bookings_pkey PRIMARY KEY (id),
    CONSTRAINT hotel_bookings_item_fkey FOREIGN KEY (booking_item_id, user_id)
        REFERENCES public.booking_items (id, user_id) ON DELETE CASCADE,
    CONSTRAINT hotel_bookings_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT hotel_bookings_dates_check CHECK (check_out > check_in),
    CONSTRAINT hotel_bookings_star_rating_check CHECK (star_rating BETWEEN 1 AND 5),
    CONSTRAINT hotel_bookings_country_code_check CHECK (country_code ~ '^[A-Z]{2}$'),
    CONSTRAINT hotel_bookings_rooms_check CHECK (rooms > 0),
    CONSTRAINT hotel_bookings_guests_check CHECK (guests > 0),
    CONSTRAINT hotel_bookings_price_per_night_check CHECK (price_per_night > 0),
    CONSTRAINT hotel_bookings_total_price_check CHECK (total_price > 0),
    CONSTRAINT hotel_bookings_currency_check CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE INDEX hotel_bookings_item_idx ON public.hotel_bookings (booking_item_id, user_id);
CREATE INDEX hotel_bookings_user_idx ON public.hotel_bookings (user_id);
CREATE INDEX hotel_bookings_hotel_idx ON public.hotel_bookings (hotel_identifier);
CREATE INDEX hotel_bookings_details_gin ON public.hotel_bookings USING gin (details);

-- Guest feedback after a stay: the source of social proof (public, see row-level security).
CREATE TABLE public.hotel_ratings (
    id                    uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id               uuid        NOT NULL,
    booking_id            uuid,
    hotel_identifier      text        NOT NULL,
    rating                smallint    NOT NULL,
    exceeded_expectations boolean     NOT NULL DEFAULT false,
    would_rebook          boolean     NOT NULL DEFAULT false,
    review_text           text,
    aspects               jsonb,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hotel_ratings_pkey PRIMARY KEY (id),
    CONSTRAINT hotel_ratings_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT hotel_ratings_booking_fkey FOREIGN KEY (booking_id, user_id)
        REFERENCES public.bookings (id, user_id) ON DELETE CASCADE,
    CONSTRAINT hotel_ratings_booking_key UNIQUE (booking_id, hotel_identifier),
    CONSTRAINT hotel_ratings_rating_check CHECK (rating BETWEEN 1 AND 5)
);
CREATE INDEX hotel_ratings_user_idx ON public.hotel_ratings (user_id);
CREATE INDEX hotel_ratings_booking_idx ON public.hotel_ratings (booking_id, user_id);
CREATE INDEX hotel_ratings_hotel_idx ON public.hotel_ratings (hotel_identifier);
CREATE INDEX hotel_ratings_aspects_gin ON public.hotel_ratings USING gin (aspects);

-- Provider search results shared by all users (no personal data, no row-level security).
CREATE TABLE public.flight_search_cache (
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    cache_key           text        NOT NULL,
    origin              text        NOT NULL,
    destination         text        NOT NULL,
    departure_date      date        NOT NULL,
    return_date         date,
    passengers          integer     NOT NULL DEFAULT 1,
    cabin_class         text        NOT NULL DEFAULT 'economy',
    provider            text,
    search_params       jsonb,
    results             jsonb       NOT NULL,
    hit_count           integer     NOT NULL DEFAULT 0,
    last_hit_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    CONSTRAINT flight_search_cache_pkey PRIMARY KEY (id),
    CONSTRAINT flight_search_cache_key_key UNIQUE (cache_key),
    CONSTRAINT flight_search_cache_dates_check CHECK (return_date > departure_date),
    CONSTRAINT flight_search_cache_passengers_check CHECK (passengers > 0),
    CONSTRAINT flight_search_cache_cabin_class_check
        CHECK (cabin_class IN ('economy', 'premium_economy', 'business', 'first')),
    CONSTRAINT flight_search_cache_hit_count_check CHECK (hit_count >= 0),
    CONSTRAINT flight_search_cache_expiry_check CHECK (expires_at > created_at)
);
CREATE INDEX flight_search_cache_expires_at_idx ON public.flight_search_cache (expires_at);
CREATE INDEX flight_search_cache_route_idx
    ON public.flight_search_cache (origin, destination, departure_date);
CREATE INDEX flight_search_cache_search_params_gin
    ON public.flight_search_cache USING gin (search_params);
CREATE INDEX flight_search_cache_results_gin ON public.flight_search_cache USING gin (results);

CREATE TABLE public.hotel_search_cache (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    cache_key     text        NOT NULL,
    city          text        NOT NULL,
    check_in      date        NOT NULL,
    check_out     date        NOT NULL,
    guests        integer     NOT NULL DEFAULT 1,
    rooms         integer     NOT NULL DEFAULT 1,
    provider      text,
    search_params jsonb,
    results       jsonb       NOT NULL,
    hit_count     integer     NOT NULL DEFAULT 0,
    last_hit_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CONSTRAINT hotel_search_cache_pkey PRIMARY KEY (id),
    CONSTRAINT hotel_search_cache_key_key UNIQUE (cache_key),
    CONSTRAINT hotel_search_cache_dates_check CHECK (check_out > check_in),
    CONSTRAINT hotel_search_cache_guests_check CHECK (guests > 0),
    CONSTRAINT hotel_search_cache_rooms_check CHECK (rooms > 0),
    CONSTRAINT hotel_search_cache_hit_count_check CHECK (hit_count >= 0),
    CONSTRAINT hotel_search_cache_expiry_check CHECK (expires_at > created_at)
);
CREATE INDEX hotel_search_cache_expires_at_idx ON public.hotel_search_cache (expires_at);
CREATE INDEX hotel_search_cache_city_idx ON public.hotel_search_cache (city, check_in);
CREATE INDEX hotel_search_cache_search_params_gin
    ON public.hotel_search_cache USING gin (search_params);
CREATE INDEX hotel_search_cache_results_gin ON public.hotel_search_cache USING gin (results);

CREATE TABLE public.crypto_payments (
    id               uuid          NOT NULL DEFAULT gen_random_uuid(),
    user_id          uuid          NOT NULL,
    booking_id       uuid          NOT NULL,
    amount           numeric(30,18) NOT NULL,
    currency         text          NOT NULL,
    network          text          NOT NULL,
    fiat_amount      numeric(12,2) NOT NULL,
    fiat_currency    text          NOT NULL DEFAULT 'SAR',
    exchange_rate    numeric(30,12),
    wallet_address   text          NOT NULL,
    tx_hash          text,
    confirmations    integer       NOT NULL DEFAULT 0,
    status           text          NOT NULL DEFAULT 'pending',
    metadata         jsonb,
    expires_at       timestamptz   NOT NULL,
    confirmed_at     timestamptz,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT crypto_payments_pkey PRIMARY KEY (id),
    CONSTRAINT crypto_payments_tx_hash_key UNIQUE (tx_hash),
    CONSTRAINT crypto_payments_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT crypto_payments_booking_fkey FOREIGN KEY (booking_id, user_id)
        REFERENCES public.bookings (id, user_id) ON DELETE CASCADE,
    CONSTRAINT crypto_payments_status_check
        CHECK (status IN ('pending', 'confirmed', 'expired', 'failed')),
    CONSTRAINT crypto_payments_amount_check CHECK (amount > 0),
    CONSTRAINT crypto_payments_fiat_amount_check CHECK (fiat_amount > 0),
    CONSTRAINT crypto_payments_exchange_rate_check CHECK (exchange_rate > 0),
    CONSTRAINT crypto_payments_currency_check CHECK (currency ~ '^[A-Z0-9]{2,10}$'),
    CONSTRAINT crypto_payments_fiat_currency_check CHECK (fiat_currency ~ '^[A-Z]{3}$'),
    CONSTRAINT crypto_payments_network_check
        CHECK (network IN ('bitcoin', 'ethereum', 'tron', 'solana', 'polygon', 'bsc',
                           'lightning')),
    CONSTRAINT crypto_payments_confirmations_check CHECK (confirmations >= 0),
    CONSTRAINT crypto_payments_expiry_check CHECK (expires_at > created_at),
    CONSTRAINT crypto_payments_confirmed_at_check
        CHECK (status <> 'confirmed' OR confirmed_at IS NOT NULL)
);
CREATE INDEX crypto_payments_user_idx ON public.crypto_payments (user_id);
CREATE INDEX crypto_payments_booking_idx ON public.crypto_payments (booking_id, user_id);
CREATE INDEX crypto_payments_pending_expiry_idx ON public.crypto_payments (status, expires_at)
    WHERE status = 'pending';
CREATE INDEX crypto_payments_metadata_gin ON public.crypto_payments USING gin (metadata);
CREATE TRIGGER crypto_payments_set_updated_at BEFORE UPDATE ON public.crypto_payments
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- The assistant's guess of a user's next trip.
CREATE TABLE public.trip_predictions (
    id                    uuid          NOT NULL DEFAULT gen_random_uuid(),
    user_id               uuid          NOT NULL,
    predicted_destination text          NOT NULL,
    predicted_start_date  date,
    predicted_end_date    date,
    predicted_budget      numeric(12,2),
    confidence_level      numeric(4,3)  NOT NULL,
    status                text          NOT NULL DEFAULT 'active',
    features              jsonb,
    model_version         text,
    created_at            timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT trip_predictions_pkey PRIMARY KEY (id),
    CONSTRAINT trip_predictions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT trip_predictions_dates_check CHECK (predicted_end_date > predicted_start_date),
    CONSTRAINT trip_predictions_budget_check CHECK (predicted_budget > 0),
    CONSTRAINT trip_predictions_confidence_check CHECK (confidence_level BETWEEN 0 AND 1),
    CONSTRAINT trip_predictions_status_check
        CHECK (status IN ('active', 'accepted', 'dismissed', 'expired'))
);
CREATE INDEX trip_predictions_user_idx ON public.trip_predictions (user_id, confidence_level);
CREATE INDEX trip_predictions_features_gin ON public.trip_predictions USING gin (features);

-- Satisfaction predicted before a booking, compared with the outcome after the trip.
CREATE TABLE public.outcome_predictions (
    id                     uuid         NOT NULL DEFAULT gen_random_uuid(),
    booking_id             uuid         NOT NULL,
    user_id                uuid         NOT NULL,
    predicted_rating       numeric(3,2) NOT NULL,
    predicted_satisfaction numeric(4,3) NOT NULL,
    confidence_level       numeric(4,3) NOT NULL,
    actual_rating          smallint,
    actual_satisfaction    boolean,
    prediction_accuracy    numeric(4,3),
    features               jsonb,
    created_at             timestamptz  NOT NULL DEFAULT now(),
    evaluated_at           timestamptz,
    CONSTRAINT outcome_predictions_pkey PRIMARY KEY (id),
    CONSTRAINT outcome_predictions_booking_fkey FOREIGN KEY (booking_id, user_id)
        REFERENCES public.bookings (id, user_id) ON DELETE CASCADE,
    CONSTRAINT outcome_predictions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT outcome_predictions_predicted_rating_check CHECK (predicted_rating BETWEEN 1 AND 5),
    CONSTRAINT outcome_predictions_actual_rating_check CHECK (actual_rating BETWEEN 1 AND 5),
    CONSTRAINT outcome_predictions_satisfaction_check
        CHECK (predicted_satisfaction BETWEEN 0 AND 1),
    CONSTRAINT outcome_predictions_confidence_check CHECK (confidence_level BETWEEN 0 AND 1),
    CONSTRAINT outcome_predictions_accuracy_check CHECK (prediction_accuracy BETWEEN 0 AND 1),
    CONSTRAINT outcome_predictions_evaluated_check CHECK (evaluated_at >= created_at)
);
CREATE INDEX outcome_predictions_booking_idx ON public.outcome_predictions (booking_id, user_id);
CREATE INDEX outcome_predictions_user_idx ON public.outcome_predictions (user_id);
CREATE INDEX outcome_predictions_features_gin ON public.outcome_predictions USING gin (features);

CREATE TABLE public.referrals (
    id               uuid          NOT NULL DEFAULT gen_random_uuid(),
    referrer_user_id uuid          NOT NULL,
    referred_user_id uuid,
    referral_code    text          NOT NULL,
    channel          text,
    status           text          NOT NULL DEFAULT 'pending',
    reward_amount    numeric(12,2),
    metadata         jsonb,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    signed_up_at     timestamptz,
    converted_at     timestamptz,
    CONSTRAINT referrals_pkey PRIMARY KEY (id),
    CONSTRAINT referrals_code_key UNIQUE (referral_code),
    CONSTRAINT referrals_referrer_fkey FOREIGN KEY (referrer_user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT referrals_referred_fkey FOREIGN KEY (referred_user_id)
        REFERENCES public.users (id) ON DELETE SET NULL,
    CONSTRAINT referrals_self_check CHECK (referred_user_id <> referrer_user_id),
    CONSTRAINT referrals_status_check
        CHECK (status IN ('pending', 'signed_up', 'converted', 'expired')),
    CONSTRAINT referrals_reward_amount_check CHECK (reward_amount > 0),
    CONSTRAINT referrals_code_format_check CHECK (referral_code ~ '^[A-Za-z0-9_-]{4,64}$'),
    CONSTRAINT referrals_converted_after_signup_check CHECK (converted_at >= signed_up_at)
);
CREATE INDEX referrals_referrer_idx ON public.referrals (referrer_user_id);
CREATE INDEX referrals_referred_idx ON public.referrals (referred_user_id);
CREATE INDEX referrals_metadata_gin ON public.referrals USING gin (metadata);

CREATE TABLE public.shared_content (
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id          uuid        NOT NULL,
    content_type     text        NOT NULL,
    content_id       text        NOT NULL,
    share_platform   text        NOT NULL,
    share_url        text,
    click_count      integer     NOT NULL DEFAULT 0,
    conversion_count integer     NOT NULL DEFAULT 0,
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shared_content_pkey PRIMARY KEY (id),
    CONSTRAINT shared_content_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT shared_content_type_check
        CHECK (content_type IN ('trip', 'booking', 'hotel', 'destination', 'itinerary', 'review')),
    CONSTRAINT shared_content_platform_check
        CHECK (share_platform IN ('whatsapp', 'telegram', 'twitter', 'facebook', 'instagram',
                                  'snapchat', 'tiktok', 'email', 'link', 'other')),
    CONSTRAINT shared_content_click_count_check CHECK (click_count >= 0),
    CONSTRAINT shared_content_conversion_count_check CHECK (conversion_count >= 0),
    CONSTRAINT shared_content_conversions_le_clicks_check CHECK (conversion_count <= click_count)
);
CREATE INDEX shared_content_user_idx ON public.shared_content (user_id);
CREATE INDEX shared_content_metadata_gin ON public.shared_content USING gin (metadata);
