//! [`Client`]: every method of the three services over one channel and one token, with
//! idempotent calls retried and the watch stream resuming.

use std::future::Future;

use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::auth::BearerAuth;
use crate::pb;
use crate::pb::access_service_client::AccessServiceClient;
use crate::pb::audit_service_client::AuditServiceClient;
use crate::pb::installed_app_service_client::InstalledAppServiceClient;
use crate::pb::integration_service_client::IntegrationServiceClient;
use crate::pb::webhook_service_client::WebhookServiceClient;
use crate::retry::{RetryPolicy, is_transient};
use crate::watch::{EventStream, watch};

/// The channel the generated clients of a [`Client`] use: every request carries the token.
pub type AuthedChannel = InterceptedService<Channel, BearerAuth>;

/// A client of integration-hub.
///
/// Which calls are retried (on UNAVAILABLE, or a connection that broke, with
/// [`RetryPolicy`] backoff and at least the server's `RetryInfo` delay): the read-only ones
/// (`Get*`, `List*`, `ResolveIntegrationCredentials`, `DeleteInstalledApp` with
/// `validate_only`) and the creates that carry a `request_id` (the server answers a repeat
/// with the first result). Every other call is sent once: repeating it could apply it twice.
/// Any call refused with UNAUTHENTICATED is sent once more with a fresh token when the token
/// comes from a refreshing callback (the server refused it before running the method).
///
/// Cheap to clone; clones share the channel and the token.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    pub(crate) auth: BearerAuth,
    pub(crate) retry: RetryPolicy,
}

/// Generates the retrying wrapper of each unary method.
macro_rules! unary {
    ($(
        $(#[$doc:meta])*
        $method:ident($service:ident, $request:ty) -> $response:ty, retry if $retry:expr;
    )*) => {$(
        $(#[$doc])*
        pub async fn $method(&self, request: $request) -> Result<$response, Status> {
            let retryable: fn(&$request) -> bool = $retry;
            let client = self.$service();
            self.call(retryable(&request), request, move |request| {
                let mut client = client.clone();
                async move { client.$method(request).await }
            })
            .await
        }
    )*};
}

impl Client {
    /// A client on `channel`: one address with [`Endpoint::connect_lazy`] (reconnects, and
    /// resolves the name again, on every new connection: a Kubernetes Service follows its
    /// pods), or a set of replicas with [`Channel::balance_channel`] that you update.
    pub fn new(channel: Channel, auth: BearerAuth) -> Client {
        Client {
            channel,
            auth,
            retry: RetryPolicy::default(),
        }
    }

    /// A client of the server at `uri` (such as `http://127.0.0.1:50051`), connecting on the
    /// first call and reconnecting whenever the connection breaks.
    pub fn connect_lazy(
        uri: impl Into<String>,
        auth: BearerAuth,
    ) -> Result<Client, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(uri.into())?;
        Ok(Client::new(endpoint.connect_lazy(), auth))
    }

    /// Replaces the [`RetryPolicy::default`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn auth(&self) -> &BearerAuth {
        &self.auth
    }

    fn authed(&self) -> AuthedChannel {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    /// The generated client of `InstalledAppService` on this channel and token (no retries).
    pub fn installed_apps(&self) -> InstalledAppServiceClient<AuthedChannel> {
        InstalledAppServiceClient::new(self.authed())
    }

    /// The generated client of `IntegrationService` on this channel and token (no retries).
    pub fn integrations(&self) -> IntegrationServiceClient<AuthedChannel> {
        IntegrationServiceClient::new(self.authed())
    }

    /// The generated client of `WebhookService` on this channel and token (no retries).
    pub fn webhooks(&self) -> WebhookServiceClient<AuthedChannel> {
        WebhookServiceClient::new(self.authed())
    }

    /// The generated client of `AuditService` on this channel and token (no retries).
    pub fn audit(&self) -> AuditServiceClient<AuthedChannel> {
        AuditServiceClient::new(self.authed())
    }

    /// The least-privilege calls.
    pub fn access(&self) -> AccessServiceClient<AuthedChannel> {
        AccessServiceClient::new(self.authed())
    }

    /// Waits until the bearer token is at hand (UNAUTHENTICATED when it cannot be had).
    async fn ready(&self) -> Result<(), Status> {
        self.auth
            .ready()
            .await
            .map_err(|err| Status::unauthenticated(err.to_string()))
    }

    /// Sends `request` through `send`, again while the policy allows when `retryable`.
    async fn call<Req, Resp, Send, Fut>(
        &self,
        retryable: bool,
        request: Req,
        mut send: Send,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        Send: FnMut(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut retries = 0u32;
        let mut refreshed = false;
        loop {
            self.ready().await?;
            let status = match send(Request::new(request.clone())).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            if status.code() == Code::Unauthenticated && self.auth.can_refresh() && !refreshed {
                // Refused at authentication, before the method ran: any call may be sent once
                // more, with a new token.
                self.auth.invalidate();
                refreshed = true;
                continue;
            }
            if !(retryable && is_transient(&status) && retries + 1 < self.retry.max_attempts) {
                return Err(status);
            }
            tokio::time::sleep(self.retry.delay(retries, &status)).await;
            retries += 1;
        }
    }

    unary! {
        /// `ListServices`: the service catalog. Retried.
        list_services(installed_apps, pb::ListServicesRequest) -> pb::ListServicesResponse,
            retry if |_| true;
        /// `CreateInstalledApp`. Retried only with a `request_id`.
        create_installed_app(installed_apps, pb::CreateInstalledAppRequest) -> pb::InstalledApp,
            retry if |r| !r.request_id.is_empty();
        /// `GetInstalledApp`. Retried.
        get_installed_app(installed_apps, pb::GetInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| true;
        /// `ListInstalledApps`. Retried.
        list_installed_apps(installed_apps, pb::ListInstalledAppsRequest)
            -> pb::ListInstalledAppsResponse,
            retry if |_| true;
        /// `UpdateInstalledApp`. Sent once.
        update_installed_app(installed_apps, pb::UpdateInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| false;
        /// `DeleteInstalledApp`. Retried only with `validate_only` (it changes nothing then).
        delete_installed_app(installed_apps, pb::DeleteInstalledAppRequest)
            -> pb::DeleteInstalledAppResponse,
            retry if |r| r.validate_only;
        /// `ReportCredentialsRejected` (service principals). Sent once.
        report_credentials_rejected(installed_apps, pb::ReportCredentialsRejectedRequest)
            -> pb::InstalledApp,
            retry if |_| false;
        /// `SuspendInstalledApp` (admins). Sent once.
        suspend_installed_app(installed_apps, pb::SuspendInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| false;
        /// `ResumeInstalledApp` (admins). Sent once.
        resume_installed_app(installed_apps, pb::ResumeInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| false;
        /// `TransferInstalledApp` (admins). Sent once.
        transfer_installed_app(installed_apps, pb::TransferInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| false;
        /// `TransferIntegration` (admins). Sent once.
        transfer_integration(integrations, pb::TransferIntegrationRequest) -> pb::Integration,
            retry if |_| false;
        /// `PromoteIntegrationCredentials`. Sent once.
        promote_integration_credentials(integrations, pb::PromoteIntegrationCredentialsRequest)
            -> pb::PromoteIntegrationCredentialsResponse,
            retry if |_| false;
        /// `StartInstalledAppAuthorization`: an OAuth authorization URL. Sent once (each
        /// call starts another authorization).
        start_installed_app_authorization(installed_apps,
            pb::StartInstalledAppAuthorizationRequest)
            -> pb::StartInstalledAppAuthorizationResponse,
            retry if |_| false;
        /// `CompleteInstalledAppAuthorization`. Sent once (a state is used once).
        complete_installed_app_authorization(installed_apps,
            pb::CompleteInstalledAppAuthorizationRequest) -> pb::InstalledAppAuthorization,
            retry if |_| false;
        /// `GetInstalledAppAuthorization`. Retried.
        get_installed_app_authorization(installed_apps, pb::GetInstalledAppAuthorizationRequest)
            -> pb::InstalledAppAuthorization,
            retry if |_| true;
        /// `VerifyInstalledApp` (developers and admins). Sent once (a check can change the
        /// app's state).
        verify_installed_app(installed_apps, pb::VerifyInstalledAppRequest) -> pb::InstalledApp,
            retry if |_| false;
        /// `CreateIntegration`. Retried only with a `request_id`.
        create_integration(integrations, pb::CreateIntegrationRequest) -> pb::Integration,
            retry if |r| !r.request_id.is_empty();
        /// `GetIntegration`. Retried.
        get_integration(integrations, pb::GetIntegrationRequest) -> pb::Integration,
            retry if |_| true;
        /// `ListIntegrations`. Retried.
        list_integrations(integrations, pb::ListIntegrationsRequest)
            -> pb::ListIntegrationsResponse,
            retry if |_| true;
        /// `UpdateIntegration`. Sent once.
        update_integration(integrations, pb::UpdateIntegrationRequest) -> pb::Integration,
            retry if |_| false;
        /// `DeleteIntegration`. Sent once.
        delete_integration(integrations, pb::DeleteIntegrationRequest) -> (),
            retry if |_| false;
        /// `ReauthenticateIntegration`. Sent once.
        reauthenticate_integration(integrations, pb::ReauthenticateIntegrationRequest)
            -> pb::Integration,
            retry if |_| false;
        /// `ReauthenticateIntegrations` (bulk). Sent once.
        reauthenticate_integrations(integrations, pb::ReauthenticateIntegrationsRequest)
            -> pb::ReauthenticateIntegrationsResponse,
            retry if |_| false;
        /// `ResolveIntegrationCredentials` (service principals). Read-only, so retried; each
        /// attempt the server answers is audited.
        resolve_integration_credentials(integrations, pb::ResolveIntegrationCredentialsRequest)
            -> pb::ResolveIntegrationCredentialsResponse,
            retry if |_| true;
        /// `ListAuditEvents` (admins). Retried.
        list_audit_events(audit, pb::ListAuditEventsRequest) -> pb::ListAuditEventsResponse,
            retry if |_| true;
        /// `SetInstalledAppUsableBy` (its owner or admins). Retried: setting the same value
        /// twice is the same change (a preview changes nothing).
        set_installed_app_usable_by(access, pb::SetInstalledAppUsableByRequest) -> pb::SetInstalledAppUsableByResponse,
            retry if |_| true;
        /// `TransferOwnership` (admins). Retried only as a preview: a second hand-over
        /// after a lost answer would find nothing left and answer zero counts.
        transfer_ownership(access, pb::TransferOwnershipRequest) -> pb::TransferOwnershipResponse,
            retry if |r| r.validate_only;
        /// `DeprovisionPerson` (admins, a configured service). Retried only as a preview.
        deprovision_person(access, pb::DeprovisionPersonRequest) -> pb::DeprovisionPersonResponse,
            retry if |r| r.validate_only;
        /// `SetServicePolicy` (admins). Retried: setting the same policy again changes
        /// nothing more (a block suspends only what is not suspended yet).
        set_service_policy(access, pb::SetServicePolicyRequest) -> pb::SetServicePolicyResponse,
            retry if |_| true;
        /// `RequestInstallation` (developers). Sent once: a retry after a lost answer meets
        /// the first request (ALREADY_EXISTS).
        request_installation(access, pb::RequestInstallationRequest) -> pb::InstallationRequest,
            retry if |_| false;
        /// `ListInstallationRequests`. Retried.
        list_installation_requests(access, pb::ListInstallationRequestsRequest) -> pb::ListInstallationRequestsResponse,
            retry if |_| true;
        /// `ApproveInstallationRequest` (admins). Sent once.
        approve_installation_request(access, pb::ApproveInstallationRequestRequest) -> pb::InstallationRequest,
            retry if |_| false;
        /// `DenyInstallationRequest` (admins). Sent once.
        deny_installation_request(access, pb::DenyInstallationRequestRequest) -> pb::InstallationRequest,
            retry if |_| false;
        /// `CreateWebhookSubscription` (admins). Sent once: the secret is shown once.
        create_webhook_subscription(webhooks, pb::CreateWebhookSubscriptionRequest)
            -> pb::CreateWebhookSubscriptionResponse,
            retry if |_| false;
        /// `GetWebhookSubscription`. Retried.
        get_webhook_subscription(webhooks, pb::GetWebhookSubscriptionRequest)
            -> pb::WebhookSubscription,
            retry if |_| true;
        /// `ListWebhookSubscriptions`. Retried.
        list_webhook_subscriptions(webhooks, pb::ListWebhookSubscriptionsRequest)
            -> pb::ListWebhookSubscriptionsResponse,
            retry if |_| true;
        /// `UpdateWebhookSubscription` (admins). Sent once.
        update_webhook_subscription(webhooks, pb::UpdateWebhookSubscriptionRequest)
            -> pb::WebhookSubscription,
            retry if |_| false;
        /// `DeleteWebhookSubscription` (admins). Sent once.
        delete_webhook_subscription(webhooks, pb::DeleteWebhookSubscriptionRequest) -> (),
            retry if |_| false;
        /// `RotateWebhookSecret` (admins). Sent once: a repeat would rotate again.
        rotate_webhook_secret(webhooks, pb::RotateWebhookSecretRequest)
            -> pb::RotateWebhookSecretResponse,
            retry if |_| false;
        /// `ListWebhookDeliveries`. Retried.
        list_webhook_deliveries(webhooks, pb::ListWebhookDeliveriesRequest)
            -> pb::ListWebhookDeliveriesResponse,
            retry if |_| true;
        /// `RedeliverWebhookEvents` (admins). Retried: moving to the same cursor twice is
        /// the same as once.
        redeliver_webhook_events(webhooks, pb::RedeliverWebhookEventsRequest)
            -> pb::WebhookSubscription,
            retry if |_| true;
        /// `SendTestWebhook` (admins). Sent once.
        send_test_webhook(webhooks, pb::SendTestWebhookRequest) -> pb::WebhookDelivery,
            retry if |_| false;
    }

    /// `WatchIntegrationEvents` as a stream of events that resumes from its cursor across
    /// failures, server restarts and replica changes, and never yields an event twice; see
    /// [`crate::watch`]. The call is made on the first poll.
    pub fn watch_integration_events(
        &self,
        request: pb::WatchIntegrationEventsRequest,
    ) -> EventStream {
        watch(self.clone(), request)
    }

    /// `WatchInstalledAppEvents`: the raw stream (no resuming; resume from the last
    /// message's `cursor` yourself).
    pub fn watch_installed_app_events(
        &self,
        request: pb::WatchInstalledAppEventsRequest,
    ) -> impl Future<Output = Result<tonic::Streaming<pb::WatchInstalledAppEventsResponse>, Status>>
    + Send
    + 'static {
        let client = self.clone();
        async move {
            client.ready().await?;
            Ok(client
                .installed_apps()
                .watch_installed_app_events(request)
                .await?
                .into_inner())
        }
    }

    /// `WatchAuditEvents`: the raw stream (no resuming; resume from the last message's
    /// `cursor` yourself).
    pub fn watch_audit_events(
        &self,
        request: pb::WatchAuditEventsRequest,
    ) -> impl Future<Output = Result<tonic::Streaming<pb::WatchAuditEventsResponse>, Status>>
    + Send
    + 'static {
        let client = self.clone();
        async move {
            client.ready().await?;
            Ok(client
                .audit()
                .watch_audit_events(request)
                .await?
                .into_inner())
        }
    }
}
